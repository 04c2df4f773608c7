"""The dashboard and the alert rules ask only for series the app's /metrics serves."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_observability_files import alert_rules, dashboard_expressions

# Our metrics share this prefix; `up` and the like are Prometheus's own.
OUR_METRIC = re.compile(r"\bilps_[a-z0-9_]+\b")
# The sample names each family type exposes, after the family's name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


async def served_series_names(client: httpx.AsyncClient) -> set[str]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        family.name + suffix
        for family in text_string_to_metric_families(response.text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


async def test_the_dashboard_queries_only_served_metrics(client: httpx.AsyncClient) -> None:
    served = await served_series_names(client)
    asked = {
        name for expression in dashboard_expressions() for name in OUR_METRIC.findall(expression)
    }

    assert asked, "the dashboard queries none of our metrics"
    assert asked <= served, sorted(asked - served)
    # Every family is on the dashboard somewhere (histograms through their buckets); the
    # parser reads a labelled family's `_created` samples as a family of their own.
    names = {
        family.name
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
    }
    families = {name for name in names if name.removesuffix("_created") not in names - {name}}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in asked}
    assert families <= shown, sorted(families - shown)


async def test_the_alert_rules_query_only_served_metrics(client: httpx.AsyncClient) -> None:
    served = await served_series_names(client)
    asked = {name for rule in alert_rules() for name in OUR_METRIC.findall(rule["expr"])}

    assert asked, "no alert queries our metrics"
    assert asked <= served, sorted(asked - served)
