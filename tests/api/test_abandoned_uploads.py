"""A client that goes away mid-upload: one INFO line and a metric, no traceback, nothing
stored, no 5xx counted, whichever way the body was being received."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.metrics import Metrics
from app.runtime import Runtime
from tests.conftest import count_rows
from tests.live import live_server
from tests.waiting import eventually

USER = str(uuid.uuid4()).encode()
ABANDONED = 5

FILE_HEAD = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.pcm"\r\n\r\n'
BODY = (
    b'--xyz\r\nContent-Disposition: form-data; name="title"\r\n\r\nStella\r\n'
    b'--xyz\r\nContent-Disposition: form-data; name="text_id"\r\n\r\n'
    + str(uuid.uuid4()).encode()
    + b"\r\n"
    + FILE_HEAD
    + b"\x01\x00" * 100_000
    + b"\r\n--xyz--\r\n"
)
HALF = BODY[: len(BODY) // 2]


def head(path: bytes, framing: bytes) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nX-User-Id: " + USER + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n" + framing + b"\r\n"
    )


# Declared length: parsed into memory. Chunked (no length): Starlette's spooled parser.
DECLARED = b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
HALF_CHUNK = f"{len(HALF):x}\r\n".encode() + HALF + b"\r\n"
ABANDONMENTS = {
    "declared length, /tasks": head(b"/tasks", DECLARED) + HALF,
    "chunked, /tasks": head(b"/tasks", CHUNKED) + HALF_CHUNK,
    "declared length, legacy /transcribe": head(b"/transcribe", DECLARED) + HALF,
    "chunked, legacy /transcribe": head(b"/transcribe", CHUNKED) + HALF_CHUNK,
}


@pytest.fixture
def app(settings: Settings, database_url: URL, clean_database: None) -> FastAPI:
    return create_app(settings, database_url=database_url)


@pytest.fixture
def address(app: FastAPI) -> Iterator[tuple[str, int]]:
    with live_server(app) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        yield host, int(port)


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # uvicorn's loggers do not propagate to the root, where caplog listens.
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        yield caplog
    finally:
        server_log.removeHandler(caplog.handler)


def _abandoned(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("ilps_uploads_abandoned_total") or 0.0


def _server_errors(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "ilps_http_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["status"].startswith("5")
    )


@pytest.mark.parametrize("request_bytes", ABANDONMENTS.values(), ids=ABANDONMENTS.keys())
async def test_an_upload_abandoned_mid_body_is_an_info_line_and_a_metric(
    app: FastAPI,
    address: tuple[str, int],
    engine: AsyncEngine,
    errors: pytest.LogCaptureFixture,
    request_bytes: bytes,
) -> None:
    runtime: Runtime = app.state.runtime
    for _ in range(ABANDONED):
        _, writer = await asyncio.open_connection(*address)
        writer.write(request_bytes)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    await eventually(
        lambda: _abandoned(runtime.metrics) == ABANDONED, message="the abandoned uploads"
    )
    assert [r.getMessage() for r in errors.records if r.levelno >= logging.ERROR] == []
    lines = [r for r in errors.records if "upload abandoned" in r.getMessage()]
    assert len(lines) == ABANDONED
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert _server_errors(runtime.metrics) == 0
    assert await count_rows(engine, "tasks") == 0
