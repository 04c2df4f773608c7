"""Request metrics have a bounded set of series, whatever methods and paths clients send."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def http_label_sets(app: FastAPI) -> set[tuple[str, str, str]]:
    registry = app.state.runtime.metrics.registry
    labels: set[tuple[str, str, str]] = set()
    for family in registry.collect():
        if family.name != "ilps_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values = sample.labels
                labels.add((values["route"], values["method"], values["status"]))
    return labels


async def test_made_up_methods_and_paths_share_a_few_series(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for number in range(50):
        await client.request(f"MADEUP{number}", "/health")
        await client.request(f"X{number}", f"/no/such/path/{number}")
        await client.get(f"/no/such/path/{number}")

    series = http_label_sets(app)

    assert {method for _, method, _ in series} <= KNOWN_METHODS
    assert {route for route, _, _ in series} <= {"/health", "unmatched"}
    assert len(series) <= 6, series
    assert all(status.isdigit() and len(status) == 3 for _, _, status in series)
