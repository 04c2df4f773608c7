"""Prometheus metrics of one process, in a registry of its own (built by the app factory)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

log = logging.getLogger(__name__)

# Stage calls take from milliseconds (feedback) to minutes (transcription on a busy CPU).
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TASK_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# The server accepts any token as a method; each label value is a series kept forever, so
# anything outside this set counts as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A scrape must answer even when the database does not.
QUEUE_READ_SECONDS = 2.0


class ScrapeTimeGauges(Collector):
    """The gauges, read when Prometheus scrapes rather than set by the code they describe.

    In-process values (tasks held, open streams) come from callables the lifespan
    attaches. The queues' values need a query, which `collect` (synchronous) cannot
    await: the scrape route awaits `refresh()` first. Read on demand, they are never
    older than the scrape, and nothing queries the database while nobody scrapes. A
    failed query keeps the last values, so the scrape still answers.
    """

    def __init__(self) -> None:
        self._held: Callable[[], int] = lambda: 0
        self._followers: Callable[[], int] = lambda: 0
        self._read_queue: Callable[[], Awaitable[tuple[int, float]]] | None = None
        self._read_webhooks: Callable[[], Awaitable[tuple[int, float]]] | None = None
        self._waiting = 0
        self._oldest_age = 0.0
        self._webhooks_pending = 0
        self._oldest_webhook_age = 0.0

    def attach(
        self,
        *,
        held: Callable[[], int],
        followers: Callable[[], int],
        read_queue: Callable[[], Awaitable[tuple[int, float]]],
        read_webhooks: Callable[[], Awaitable[tuple[int, float]]] | None = None,
    ) -> None:
        self._held, self._followers, self._read_queue = held, followers, read_queue
        self._read_webhooks = read_webhooks

    async def refresh(self) -> None:
        if self._read_queue is None:
            return
        try:
            async with asyncio.timeout(QUEUE_READ_SECONDS):
                self._waiting, self._oldest_age = await self._read_queue()
        except Exception:
            log.debug("queue gauges not refreshed", exc_info=True)
        if self._read_webhooks is None:
            return
        try:
            async with asyncio.timeout(QUEUE_READ_SECONDS):
                self._webhooks_pending, self._oldest_webhook_age = await self._read_webhooks()
        except Exception:
            log.debug("webhook gauges not refreshed", exc_info=True)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "ilps_tasks_waiting",
            "Unfinished tasks nobody holds (whole database).",
            value=self._waiting,
        )
        yield GaugeMetricFamily(
            "ilps_oldest_waiting_task_age_seconds",
            "Age of the oldest unfinished task nobody holds (0: none).",
            value=self._oldest_age,
        )
        yield GaugeMetricFamily(
            "ilps_tasks_in_flight", "Tasks this process's workers hold now.", value=self._held()
        )
        yield GaugeMetricFamily(
            "ilps_webhooks_pending",
            "Webhook deliveries not yet made nor given up (whole database).",
            value=self._webhooks_pending,
        )
        yield GaugeMetricFamily(
            "ilps_oldest_pending_webhook_age_seconds",
            "Age of the oldest pending webhook delivery, since its task ended (0: none).",
            value=self._oldest_webhook_age,
        )
        yield GaugeMetricFamily(
            "ilps_sse_followers", "Open task streams on this process.", value=self._followers()
        )


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    tasks_created: Counter
    tasks_finished: Counter
    task_duration: Histogram
    stage_call_duration: Histogram
    downstream_calls: Counter
    stage_retries: Counter
    scrape_time_gauges: ScrapeTimeGauges
    webhook_attempts: Counter
    webhook_deliveries: Counter
    webhook_receivers_open: Gauge
    http_requests: Counter
    http_request_duration: Histogram
    uploads_abandoned: Counter
    # The HTTP metrics' labelled children by label values, looked up once per series:
    # `labels()` validates and hashes the values on every call, twice per request. The
    # keys are the series the registry keeps anyway (bounded labels), so no further bound.
    _http_durations: dict[tuple[str, str], Histogram] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _http_counts: dict[tuple[str, str, str], Counter] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_response_start(self, scope: Scope, seconds: float) -> None:
        """Time to the first byte, by route template and method."""
        labels = (_route_template(scope), _method_label(scope))
        child = self._http_durations.get(labels)
        if child is None:
            child = self._http_durations[labels] = self.http_request_duration.labels(*labels)
        child.observe(seconds)

    def count_request(self, scope: Scope, status: int) -> None:
        labels = (_route_template(scope), _method_label(scope), _status_label(status))
        child = self._http_counts.get(labels)
        if child is None:
            child = self._http_counts[labels] = self.http_requests.labels(*labels)
        child.inc()


def create_metrics() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    scrape_time_gauges = ScrapeTimeGauges()
    registry.register(scrape_time_gauges)
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
        scrape_time_gauges=scrape_time_gauges,
        webhook_attempts=Counter(
            "ilps_webhook_attempts",
            "Webhook attempts by outcome (delivered, gone, redirect, rejected, server_error, "
            "timeout, connection_error, refused).",
            ["outcome"], registry=registry,
        ),
        webhook_deliveries=Counter(
            "ilps_webhook_deliveries",
            "Webhook deliveries ended, by final state (delivered, disabled, expired, refused, "
            "dropped).",
            ["state"], registry=registry,
        ),
        webhook_receivers_open=Gauge(
            "ilps_webhook_receivers_open",
            "Receiver hosts whose circuit breaker is open in this process (nothing sent).",
            registry=registry,
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
        uploads_abandoned=Counter(
            "ilps_uploads_abandoned",
            "Uploads whose client went away before the whole body arrived (nothing stored).",
            registry=registry,
        ),
    )  # fmt: skip


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
