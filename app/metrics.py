"""Prometheus metrics of one process, in a registry of its own (built by the app factory)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Stage calls take from milliseconds (feedback) to minutes (transcription on a busy CPU).
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TASK_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# The server accepts any token as a method; each label value is a series kept forever, so
# anything outside this set counts as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    tasks_created: Counter
    tasks_finished: Counter
    task_duration: Histogram
    stage_call_duration: Histogram
    downstream_calls: Counter
    stage_retries: Counter
    tasks_waiting: Gauge
    oldest_waiting_age: Gauge
    tasks_in_flight: Gauge
    sse_followers: Gauge
    http_requests: Counter
    http_request_duration: Histogram

    def render(self) -> bytes:
        return generate_latest(self.registry)


def create_metrics() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=registry,
        tasks_created=Counter(
            "ilps_tasks_created", "Tasks accepted by this process.", registry=registry
        ),
        tasks_finished=Counter(
            "ilps_tasks_finished", "Tasks ended by this process's workers.", ["status"],
            registry=registry,
        ),
        task_duration=Histogram(
            "ilps_task_duration_seconds", "From creation to completed or failed.", ["status"],
            buckets=TASK_BUCKETS, registry=registry,
        ),
        stage_call_duration=Histogram(
            "ilps_stage_call_duration_seconds", "One call to an audio service.", ["stage"],
            buckets=STAGE_BUCKETS, registry=registry,
        ),
        downstream_calls=Counter(
            "ilps_downstream_calls",
            "Calls to the audio services by outcome (2xx, 4xx, 5xx, timeout, connection_error).",
            ["service", "outcome"], registry=registry,
        ),
        stage_retries=Counter(
            "ilps_stage_retries", "Transient stage failures that were retried.", ["stage"],
            registry=registry,
        ),
        tasks_waiting=Gauge(
            "ilps_tasks_waiting", "Unfinished tasks nobody holds (whole database).",
            registry=registry,
        ),
        oldest_waiting_age=Gauge(
            "ilps_oldest_waiting_task_age_seconds",
            "Age of the oldest unfinished task nobody holds (0: none).", registry=registry,
        ),
        tasks_in_flight=Gauge(
            "ilps_tasks_in_flight", "Tasks this process's workers hold now.", registry=registry
        ),
        sse_followers=Gauge(
            "ilps_sse_followers", "Open task streams on this process.", registry=registry
        ),
        http_requests=Counter(
            "ilps_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=registry,
        ),
        http_request_duration=Histogram(
            "ilps_http_request_duration_seconds",
            "Time to the response's first byte (streams: until they open).",
            ["route", "method"], buckets=HTTP_BUCKETS, registry=registry,
        ),
    )  # fmt: skip


class HttpMetrics:
    """ASGI middleware: count and time requests by route template, never by raw path."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = _method_label(scope)

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = _route_template(scope)
                self.metrics.http_request_duration.labels(route, method).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.http_requests.labels(
                _route_template(scope), method, _status_label(status)
            ).inc()


def _method_label(scope: Scope) -> str:
    method = str(scope["method"])
    return method if method in KNOWN_METHODS else "other"


def _route_template(scope: Scope) -> str:
    """The matched route's template; the raw path would be a series per task id."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _status_label(status: int) -> str:
    # ASGI lets an app send any integer; only real status codes become label values.
    return str(status) if 100 <= status <= 599 else "other"
