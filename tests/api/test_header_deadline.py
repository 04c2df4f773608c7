"""A connection stalled inside its request head is closed after the deadline, by the
protocol start.py gives uvicorn; a complete head in time is served as usual."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from sqlalchemy import URL

from app.config import Settings
from app.header_deadline import with_header_deadline
from app.main import create_app
from tests.live import live_server

DEADLINE_SECONDS = 1.0


@pytest.fixture
def address(
    settings: Settings, database_url: URL, clean_database: None
) -> Iterator[tuple[str, int]]:
    app: FastAPI = create_app(settings, database_url=database_url)
    with live_server(app, http=with_header_deadline(DEADLINE_SECONDS)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        yield host, int(port)


async def _closed_after(address: tuple[str, int], sent: bytes) -> bytes:
    """Send `sent`, then read until the server closes (a generous test deadline)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(sent)
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read()  # b"" once the server closed without a word
    finally:
        writer.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET / HTTP/1.1\r\nHost:", b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n"],
    ids=["nothing", "inside a header", "headers but no blank line"],
)
async def test_a_stalled_request_head_is_closed(address: tuple[str, int], sent: bytes) -> None:
    assert await _closed_after(address, sent) == b""


async def test_a_kept_alive_connection_gets_a_new_deadline_per_head(
    address: tuple[str, int],
) -> None:
    # The first request is served; the stalled second head is then cut off.
    answer = await _closed_after(address, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /he")

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1") == 1


async def test_a_request_whose_head_arrived_is_not_cut_by_the_deadline(
    address: tuple[str, int],
) -> None:
    body = b"--xyz--\r\n"
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(
            b"POST /tasks HTTP/1.1\r\nHost: t\r\n"
            b"X-User-Id: 1f0b8c1e-6a0e-4f43-9a57-5b8f9f3f4a10\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        await writer.drain()
        # Twice the deadline with the body still to come: the connection stays open.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2 * DEADLINE_SECONDS):
                await reader.read(1)
        writer.write(body)
        await writer.drain()
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 422 ")  # an empty form, answered as usual
    finally:
        writer.close()
