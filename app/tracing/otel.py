"""The OpenTelemetry SDK and its FastAPI, asyncpg and httpx instrumentation.

Imported by `app.main` only when `tracing_requested()`: with tracing off, none of this
is loaded. The tracer provider is this object's own (not the global one), so each app
(and each test's app) traces into its own exporter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from app.tracing import SpanAttributes

INSTRUMENTATION_NAME = "app.pipeline"


def _exporter_from_environment() -> SpanExporter:
    """`OTEL_TRACES_EXPORTER`: "otlp" (the default; OTLP over HTTP) or "console"."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if names == "console":
        return ConsoleSpanExporter()
    if names != "otlp":
        raise RuntimeError(
            f"OTEL_TRACES_EXPORTER={names!r}: this service exports traces by 'otlp' "
            "(over HTTP) or 'console', or not at all ('none')"
        )
    # Imported here: the console exporter needs none of protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT... itself.
    return OTLPSpanExporter()


def _resource(service_name: str) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES first, else the service's name."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


class Tracing:
    """Built with the app (the FastAPI middleware must be in place before it serves);
    `start` and `shutdown` belong to the lifespan.

    `exporter` replaces the one the environment names, and spans are then exported as
    they end (tests read them from an in-memory exporter).
    """

    def __init__(self, service_name: str, *, exporter: SpanExporter | None = None) -> None:
        # A sampler from OTEL_TRACES_SAMPLER(_ARG) when set; no thread, no connection yet.
        self.provider = TracerProvider(resource=_resource(service_name))
        self._exporter = exporter
        self._tracer = self.provider.get_tracer(INSTRUMENTATION_NAME)
        self._asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]

    def instrument_app(self, app: FastAPI) -> None:
        """A server span per request; none per ASGI message ("send"/"receive"): an upload
        is thousands of them. OTEL_PYTHON_FASTAPI_EXCLUDED_URLS leaves routes out."""
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, exclude_spans=["receive", "send"]
        )

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        """A client span per call, and its `traceparent` in the request. Wraps the client's
        transport, so the stage clients' calls straight to it are covered too."""
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def start(self) -> None:
        if self._exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        else:
            self.provider.add_span_processor(BatchSpanProcessor(_exporter_from_environment()))
        # asyncpg's instrumentation patches the driver's classes: process-wide.
        self._asyncpg.instrument(tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Undo the driver's patches, export what is left (the batch's own timeout)."""
        if self._asyncpg.is_instrumented_by_opentelemetry:
            self._asyncpg.uninstrument()
        self.provider.shutdown()

    @contextmanager
    def span(
        self, name: str, attributes: SpanAttributes, *, start_ns: int | None = None
    ) -> Iterator[object]:
        with self._tracer.start_as_current_span(
            name, kind=trace.SpanKind.INTERNAL, attributes=dict(attributes), start_time=start_ns
        ) as span:
            yield span
