"""The service as a real process, traced by the OTEL_* variables alone: its spans reach
an OTLP/HTTP collector (a loopback stand-in here), the last ones at SIGTERM."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes import FakeServices, new_marker
from tests.pipeline.conftest import wait_terminal
from tests.pipeline.test_processes import ProcessFactory, service_process, upload

pytestmark = pytest.mark.slow

__all__ = ["service_process"]  # the fixture, shared with the process tests


class Collector:
    """Records the body of every POST to /v1/traces, as an OTLP/HTTP collector takes it."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def spans(self) -> list[tuple[str, str, int]]:
        """(service.name, span name, trace id) of every span received."""
        found = []
        with self.lock:
            for export in self.exports:
                for resource_spans in export.resource_spans:
                    service = next(
                        attribute.value.string_value
                        for attribute in resource_spans.resource.attributes
                        if attribute.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            trace_id = int.from_bytes(span.trace_id, "big")
                            found.append((service, span.name, trace_id))
        return found


@contextmanager
def running_collector() -> Iterator[tuple[Collector, str]]:
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/v1/traces":
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                with collector.lock:
                    collector.exports.append(export)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_a_traced_process_exports_its_spans_by_otlp(
    service_process: ProcessFactory, fakes: FakeServices, engine: AsyncEngine
) -> None:
    marker = new_marker()
    with running_collector() as (collector, endpoint):
        with service_process(
            "traced", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="traced-manager"
        ) as service:
            task_id = await upload(service.base_url, marker)
            await wait_terminal(engine, task_id)
            service.terminate(within=30)  # the provider's shutdown exports what is left
        spans = collector.spans()

    assert {service for service, _, _ in spans} == {"traced-manager"}
    names = {name for _, name, _ in spans}
    assert {"POST /tasks", "claim", "stage preprocessing", "stage feedback"} <= names
    [call] = fakes.feedback.calls_for(marker)
    assert call.traceparent is not None
    trace_id = int(call.traceparent.split("-")[1], 16)
    assert ("traced-manager", "stage feedback", trace_id) in spans
