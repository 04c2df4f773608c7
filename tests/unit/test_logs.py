"""Logs: one line per event, request and task ids attached, GELF to Graylog, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import uuid
import zlib

import httpx

from app.config import Settings
from app.logs import ContextFilter, GelfUdpHandler, JsonFormatter, TextFormatter, task_context
from tests.api.helpers import resource_upload
from tests.conftest import parsed_json_lines


async def test_request_ids_are_echoed_or_generated(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    given = await client.get("/health", headers={"X-Request-Id": "gateway-42"})
    fresh = await client.get("/health")

    assert given.headers["x-request-id"] == "gateway-42"
    assert len(fresh.headers["x-request-id"]) == 32


async def test_access_lines_carry_request_and_task_ids_as_json(
    client: httpx.AsyncClient, user_id: uuid.UUID, json_lines: io.StringIO
) -> None:
    task_id = (await resource_upload(client, user_id)).json()["id"]
    await client.get(
        f"/tasks/{task_id}", headers={"X-User-Id": str(user_id), "X-Request-Id": "req-7"}
    )

    access = [line for line in parsed_json_lines(json_lines) if line["logger"] == "app.access"]
    detail = next(line for line in access if line.get("request_id") == "req-7")
    assert detail["task_id"] == task_id
    assert detail["status"] == 200
    assert detail["method"] == "GET"
    assert "time" in detail


def test_task_context_reaches_text_lines() -> None:
    record = logging.LogRecord("app.pipeline", logging.INFO, __file__, 1, "stage done", None, None)
    with task_context("1234", "transcribing"):
        ContextFilter().filter(record)
    line = TextFormatter().format(record)
    assert "task_id=1234" in line
    assert "stage=transcribing" in line


def test_json_lines_carry_exceptions_and_only_the_ids_that_are_set() -> None:
    try:
        raise ValueError("bad audio")
    except ValueError:
        record = logging.LogRecord(
            "app.pipeline", logging.ERROR, __file__, 1, "stage crashed", None, sys.exc_info()
        )
    record.color_message = "\x1b[31mstage crashed\x1b[0m"  # as uvicorn adds to its records
    with task_context("t-9"):
        ContextFilter().filter(record)

    line = json.loads(JsonFormatter().format(record))

    assert line["message"] == "stage crashed"
    assert line["level"] == "ERROR"
    assert line["task_id"] == "t-9"
    assert "request_id" not in line
    assert "stage" not in line
    assert "color_message" not in line
    assert "ValueError: bad audio" in line["exception"]


def test_gelf_messages_reach_a_udp_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        handler = GelfUdpHandler("127.0.0.1", listener.getsockname()[1], source="tm-test")
        handler.addFilter(ContextFilter())
        record = logging.LogRecord("app", logging.WARNING, __file__, 1, "hello %s", ("gelf",), None)
        with task_context("abc", "feedback"):
            handler.handle(record)
        handler.close()
        payload = json.loads(zlib.decompress(listener.recv(65536)))

    assert payload["version"] == "1.1"
    assert payload["host"] == "tm-test"
    assert payload["short_message"] == "hello gelf"
    assert payload["level"] == 4
    assert payload["_task_id"] == "abc"
    assert payload["_stage"] == "feedback"
    assert payload["_logger"] == "app"


def test_secrets_never_appear_in_the_settings_repr() -> None:
    settings = Settings(_env_file=None, db_postgres_host="db", db_postgres_password="s3cret-pass")
    assert "s3cret-pass" not in repr(settings)
    assert "s3cret-pass" not in str(settings.model_dump())


def test_large_gelf_messages_arrive_in_chunks_that_reassemble() -> None:
    text = os.urandom(20_000).hex()  # incompressible enough to need several datagrams
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        handler = GelfUdpHandler("127.0.0.1", listener.getsockname()[1], source="tm-test")
        handler.handle(logging.LogRecord("app", logging.INFO, __file__, 1, text, None, None))
        handler.close()
        first = listener.recv(65536)
        chunks = {first[10]: first[12:]}
        while len(chunks) < first[11]:
            datagram = listener.recv(65536)
            assert datagram[:10] == first[:10]  # GELF magic bytes and the same message id
            chunks[datagram[10]] = datagram[12:]

    assert first[11] > 1
    payload = json.loads(zlib.decompress(b"".join(chunks[i] for i in sorted(chunks))))
    assert payload["short_message"] == text
    assert "_request_id" not in payload
