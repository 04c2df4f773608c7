"""Metrics and readiness, as an operator's scraper and load balancer see them."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.api.helpers import resource_upload
from tests.conftest import make_settings
from tests.fakes import FakeServices, unused_port


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def settings(fake_services: FakeServices) -> Settings:
    services = fake_services.settings()
    services["service_feedback"] = {"host": "127.0.0.1", "port": unused_port()}  # down
    return make_settings(**services)


async def test_metrics_count_requests_by_route_template_and_tasks(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    await resource_upload(client, user_id)
    await client.get(f"/tasks/{uuid.uuid4()}", headers={"X-User-Id": str(user_id)})

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("ilps_tasks_created_total", ())] == 1
    assert found[("ilps_tasks_waiting", ())] == 1
    assert found[("ilps_oldest_waiting_task_age_seconds", ())] > 0  # 0 would mean none waits
    assert found[("ilps_sse_followers", ())] == 0
    assert found[("ilps_tasks_in_flight", ())] == 0
    not_found = (("method", "GET"), ("route", "/tasks/{task_id}"), ("status", "404"))
    assert found[("ilps_http_requests_total", not_found)] == 1
    for name in (
        "ilps_tasks_finished_total",
        "ilps_task_duration_seconds",
        "ilps_stage_call_duration_seconds",
        "ilps_downstream_calls_total",
        "ilps_stage_retries_total",
        "ilps_http_request_duration_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in response.text


async def test_readiness_reports_the_schema_and_each_audio_service(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["database"]["ok"] is True
    assert body["database"]["schema_revision"] == body["database"]["expected_revision"]
    # Which server answers (the primary, with a host list): the test server's address.
    assert set(body["database"]) >= {"host", "port"}
    assert body["services"]["preprocessing"]["ok"] is True
    assert body["services"]["transcribing"]["ok"] is True
    # A down audio service is reported, not a reason to leave the rotation.
    assert body["services"]["feedback"]["ok"] is False
    assert body["services"]["feedback"]["error"] == "ConnectError"


async def test_readiness_fails_when_the_schema_is_behind(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        head = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        await connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        response = await client.get("/health/ready")
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )

    assert response.status_code == 503
    assert response.json()["database"]["error"] == "the schema is not at the latest migration"
