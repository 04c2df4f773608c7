"""Tracing on: spans for requests, claims and stage calls, and `traceparent` sent to the
audio services and webhook receivers. Tracing off: no `traceparent` anywhere."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.tracing.otel import Tracing
from tests.api.helpers import resource_upload
from tests.conftest import make_settings, pipeline_settings, serve
from tests.fakes import FakeServices, audio_for, new_marker
from tests.pipeline.conftest import wait_terminal
from tests.waiting import eventually
from tests.webhooks.conftest import FAST, create_task
from tests.webhooks.receiver import running_receiver


def _trace_id(traceparent: str | None) -> int:
    """The trace id of a W3C `traceparent` (version-traceid-spanid-flags)."""
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)
    return int(trace_id, 16)


def _span_id(traceparent: str | None) -> int:
    assert traceparent is not None
    return int(traceparent.split("-")[2], 16)


def _spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_task_is_traced_from_its_request_through_each_stage_call(
    fakes: FakeServices, database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(pipeline_settings(fakes), database_url=database_url, span_exporter=exporter)
    marker = new_marker()
    async with serve(app) as client:
        response = await resource_upload(client, uuid.uuid4(), audio=audio_for(marker))
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        row = await wait_terminal(engine, task_id)
        assert row["status"] == "completed", row["comment"]

    [server] = [
        span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.SERVER and span.name == "POST /tasks"
    ]
    # The request's queries are children of its span (asyncpg's instrumentation).
    queries = [
        span
        for span in exporter.get_finished_spans()
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name == "opentelemetry.instrumentation.asyncpg"
    ]
    assert any(span.context.trace_id == server.context.trace_id for span in queries)

    [claim] = [s for s in _spans(exporter, "claim") if (s.attributes or {})["task.id"] == task_id]
    by_id = {span.context.span_id: span for span in exporter.get_finished_spans()}
    for stage, fake in zip(("preprocessing", "transcribing", "feedback"), fakes.all(), strict=True):
        [span] = _spans(exporter, f"stage {stage}")
        assert span.attributes == {"task.id": task_id, "stage": stage}
        assert _parent_id(span) == claim.context.span_id
        # The service got the trace context of the HTTP call, a child of the stage span.
        [call] = fake.calls_for(marker)
        assert _trace_id(call.traceparent) == claim.context.trace_id
        http = by_id[_span_id(call.traceparent)]
        assert http.kind is SpanKind.CLIENT
        assert _parent_id(http) == span.context.span_id


async def test_a_webhook_delivery_carries_the_trace_context(
    fakes: FakeServices, database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    exporter = InMemorySpanExporter()
    settings = pipeline_settings(fakes, **FAST)
    app = create_app(settings, database_url=database_url, span_exporter=exporter)
    with running_receiver() as receiver:
        async with serve(app) as client:
            task_id = await create_task(client, uuid.uuid4(), receiver.url)
            await wait_terminal(engine, task_id)
            [delivery] = await eventually(lambda: receiver.accepted(), message="the delivery")

    by_id = {span.context.span_id: span for span in exporter.get_finished_spans()}
    http = by_id[_span_id(delivery.traceparent)]
    assert http.kind is SpanKind.CLIENT
    assert http.context.trace_id == _trace_id(delivery.traceparent)
    parent_id = _parent_id(http)
    assert parent_id is not None
    sent = by_id[parent_id]
    assert sent.name == "webhook delivery"
    assert sent.attributes == {
        "task.id": task_id,
        "webhook.id": delivery.webhook_id,
        "webhook.attempt": 1,
    }


async def test_with_tracing_off_no_trace_context_is_sent(
    fakes: FakeServices, database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    app = create_app(pipeline_settings(fakes, **FAST), database_url=database_url)
    marker = new_marker()
    with running_receiver() as receiver:
        async with serve(app) as client:
            response = await resource_upload(
                client,
                uuid.uuid4(),
                audio=audio_for(marker),
                form_extra={"callback_url": receiver.url},
            )
            assert response.status_code == 201, response.text
            await wait_terminal(engine, response.json()["id"])
            [delivery] = await eventually(lambda: receiver.accepted(), message="the delivery")

    assert delivery.traceparent is None
    for fake in fakes.all():
        [call] = fake.calls_for(marker)
        assert call.traceparent is None, fake.name


async def test_the_upload_span_can_record_the_created_tasks_location(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, clean_database: None
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "location")
    exporter = InMemorySpanExporter()
    app = create_app(make_settings(), database_url=database_url, span_exporter=exporter)
    async with serve(app) as client:
        response = await resource_upload(client, uuid.uuid4())
        assert response.status_code == 201, response.text

    [server] = [s for s in exporter.get_finished_spans() if s.name == "POST /tasks"]
    assert server.attributes is not None
    assert server.attributes["http.response.header.location"] == (response.headers["location"],)


def test_an_unknown_exporter_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    tracing = Tracing("manager")
    with pytest.raises(RuntimeError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing.start()
    tracing.shutdown()
