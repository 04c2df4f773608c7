"""An upload is received into memory when its share of the budget is free, on disk when
not; both ways store the same bytes and answer the same, and slow clients holding
memory never stop other uploads."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.upload.form_parser import BufferedFormParser
from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from tests.conftest import count_rows, make_settings
from tests.live import live_server
from tests.waiting import eventually

USER = str(uuid.uuid4())
AUDIO = os.urandom(300 * 1024 // 4 * 4)
# 16 KB of budget: half of it (what uploads received into memory may hold) is less than
# any of these uploads needs, so every one is received on disk.
SPOOLING = {"upload_memory_mb": 16 / 1024}


@pytest.fixture(params=["memory", "disk"])
def received_in(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(received_in: str) -> Settings:
    return make_settings(**(SPOOLING if received_in == "disk" else {}))


@pytest.fixture
def parsed_in_memory(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many forms the in-memory parser read."""
    calls: list[int] = []
    parse = BufferedFormParser.parse

    async def counting(self: BufferedFormParser, chunks: AsyncIterator[bytes]) -> object:
        calls.append(1)
        return await parse(self, chunks)

    monkeypatch.setattr(BufferedFormParser, "parse", counting)
    return calls


def form(*parts: tuple[bytes, bytes]) -> bytes:
    body = b"".join(b"--xyz\r\n" + head + b"\r\n\r\n" + value + b"\r\n" for head, value in parts)
    return body + b"--xyz--\r\n"


FILE_FIRST = form(
    (
        'Content-Disposition: form-data; name="file"; filename="übung – 録音.pcm"\r\n'
        "Content-Type: application/octet-stream".encode(),
        AUDIO,
    ),
    (b'Content-Disposition: form-data; name="text_id"', str(uuid.uuid4()).encode()),
    (b'Content-Disposition: form-data; name="user_id"', USER.encode()),
    (b'Content-Disposition: form-data; name="title"', "Übung".encode()),
)
HEADERS = {"Content-Type": "multipart/form-data; boundary=xyz", "X-User-Id": USER}


async def stored_audio(engine: AsyncEngine) -> tuple[bytes, str, int]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(text("SELECT content, filename, size FROM task_audio"))
        ).one()
    return bytes(row.content), row.filename, row.size


@pytest.mark.parametrize("path", ["/tasks", "/transcribe"])
async def test_both_ways_store_the_same_bytes_whatever_the_order_of_the_parts(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    received_in: str,
    parsed_in_memory: list[int],
    path: str,
) -> None:
    response = await client.post(path, content=FILE_FIRST, headers=HEADERS)

    assert response.status_code == (201 if path == "/tasks" else 200), response.text
    assert await stored_audio(engine) == (AUDIO, "übung – 録音.pcm", len(AUDIO))
    assert len(parsed_in_memory) == (1 if received_in == "memory" else 0)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (form((b'Content-Disposition: form-data; name="title"', b"x" * 9000)), 400,
         "Part exceeded maximum size of 8KB."),
        (form(*[(b'Content-Disposition: form-data; name="f%d"' % n, b"v") for n in range(9)]),
         400, "Too many fields. Maximum number of fields is 8."),
        (FILE_FIRST[:-40], 422, None),  # cut inside the last part: title missing
        (form((b'Content-Disposition: form-data; name="title"', b"Stella")), 422, None),
    ],
)  # fmt: skip
async def test_both_ways_refuse_the_same_bodies_alike(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    received_in: str,
    body: bytes,
    status: int,
    detail: str | None,
) -> None:
    response = await client.post("/tasks", content=body, headers=HEADERS)

    assert response.status_code == status, response.text
    if detail is not None:
        assert response.json() == {"detail": detail}
    else:
        assert all(error["loc"][0] == "body" for error in response.json()["detail"])
    assert await count_rows(engine, "tasks") == 0


async def test_the_budget_is_whole_again_after_uploads_of_both_kinds(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for body in (FILE_FIRST, FILE_FIRST[:-40], b"--xyz\r\nbroken"):
        await client.post("/tasks", content=body, headers=HEADERS)
    runtime: Runtime = app.state.runtime
    assert runtime.upload_memory.free == runtime.upload_memory.budget
    assert runtime.upload_memory.receiving == 0


# ------------------------------------------------------------------ slow clients


@pytest.fixture
def slow_settings() -> Settings:
    # 2 MiB of budget, 1 MiB of it for uploads received into memory; a long grace and a
    # low rate, so a stalled body is not ended during the test.
    return make_settings(upload_memory_mb=2, upload_rate_grace_seconds=60, upload_min_rate_kbps=1)


@pytest.fixture
def live(
    slow_settings: Settings, database_url: URL, clean_database: None
) -> Iterator[tuple[FastAPI, str]]:
    app = create_app(slow_settings, database_url=database_url)
    with live_server(app) as base_url:
        yield app, base_url


def head(length: int) -> bytes:
    return (
        b"POST /tasks HTTP/1.1\r\nHost: t\r\nX-User-Id: " + USER.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


async def test_a_slow_client_s_upload_arrives_whole(
    live: tuple[FastAPI, str], engine: AsyncEngine
) -> None:
    _, base_url = live
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head(len(FILE_FIRST)))
        for start in range(0, len(FILE_FIRST), 24 * 1024):  # pieces ~20 ms apart
            writer.write(FILE_FIRST[start : start + 24 * 1024])
            await writer.drain()
            await asyncio.sleep(0.02)
        async with asyncio.timeout(20):
            status_line = await reader.readline()
    finally:
        writer.close()

    assert b" 201 " in status_line
    assert (await stored_audio(engine))[0] == AUDIO


async def test_stalled_uploads_holding_memory_do_not_stop_other_uploads(
    live: tuple[FastAPI, str], engine: AsyncEngine
) -> None:
    app, base_url = live
    memory = app.state.runtime.upload_memory
    address = urlsplit(base_url)
    # Declares 500 KiB (a 1000 KiB share: nearly all the memory uploads may hold while
    # they are received), sends its first part and stalls.
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head(500 * 1024) + FILE_FIRST[:4096])
        await writer.drain()
        await eventually(lambda: memory.receiving >= 1000 * 1024 or None, within=10)

        async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
            response = await client.post("/tasks", content=FILE_FIRST, headers=HEADERS)

        assert response.status_code == 201, response.text
        assert not reader.at_eof()  # the stalled one is still being waited for
    finally:
        writer.close()
    assert (await stored_audio(engine))[0] == AUDIO


@pytest.fixture
def impatient(database_url: URL, clean_database: None) -> Iterator[tuple[FastAPI, str]]:
    # A short grace and a high rate, so a stalled body is ended within a second or two.
    settings = make_settings(upload_rate_grace_seconds=0.5, upload_min_rate_kbps=64)
    app = create_app(settings, database_url=database_url)
    with live_server(app) as base_url:
        yield app, base_url


async def test_a_stalled_upload_received_into_memory_is_408_and_gives_its_share_back(
    impatient: tuple[FastAPI, str],
) -> None:
    app, base_url = impatient
    memory = app.state.runtime.upload_memory
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head(len(FILE_FIRST)) + FILE_FIRST[:50_000])
        await writer.drain()
        await eventually(lambda: memory.receiving or None, within=10)  # into memory
        async with asyncio.timeout(20):
            answer = await reader.read()  # until the server closes the connection
    finally:
        writer.close()

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"too slowly" in answer
    await eventually(lambda: memory.free == memory.budget or None, within=10)
    assert memory.receiving == 0
