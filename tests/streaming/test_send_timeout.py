"""A client that stops reading is disconnected, and its follower slot given back."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices
from tests.live import LiveService, live_server
from tests.pipeline.conftest import task_row
from tests.waiting import eventually

SEND_TIMEOUT_SECONDS = 1.0


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    # Pings every 2 ms fill the (shrunk) socket buffers of a client that never reads in a
    # few seconds, as a long stream's events would over a longer time.
    # Transcription outlasts the test, so only the send timeout can end the stream.
    transcribing = {**fakes.settings()["service_transcribing"], "timeout": 120}
    return pipeline_settings(
        fakes,
        sse_heartbeat_seconds=0.002,
        sse_send_timeout_seconds=SEND_TIMEOUT_SECONDS,
        service_transcribing=transcribing,
    )


@pytest.fixture
def stalling_live(
    settings: Settings, database_url: URL, clean_database: None
) -> Iterator[LiveService]:
    app = create_app(settings, database_url=database_url)
    with live_server(app, send_buffer_bytes=4096) as base_url:
        yield LiveService(app=app, base_url=base_url)


def _read_to_the_end(sock: socket.socket, within: float) -> bytes:
    """Everything the server sent until it closed the connection (or fail after `within`)."""
    received = bytearray()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError(f"the server kept the connection open ({len(received)} bytes read)")


async def test_a_client_that_stops_reading_is_closed_and_its_slot_released(
    stalling_live: LiveService, fakes: FakeServices, engine: AsyncEngine
) -> None:
    live = stalling_live
    fakes.transcribing.latency = 90  # the task moves through its first stages, then waits
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        host, port = live.base_url.removeprefix("http://").split(":")
        client.connect((host, int(port)))
        client.sendall(
            f"GET /tasks/{task_id}/events?user_id={user_id}&last_event_id=0 HTTP/1.1\r\n"
            f"Host: {host}\r\n\r\n".encode()
        )
        await eventually(
            lambda: live.follower_count == 1,
            message="the stream to open",
        )
        # The client reads nothing. Once its buffers are full, sends stall; after the send
        # timeout the server gives up on it.
        await eventually(
            lambda: live.follower_count == 0,
            within=60,
            interval=0.2,
            message="the stalled stream's follower to be released",
        )
        # What the kernel had already buffered is still delivered, then the connection
        # ends: no further pings, however long the client waits.
        received = await asyncio.to_thread(_read_to_the_end, client, 20.0)
    finally:
        client.close()
    row = await task_row(engine, task_id)
    assert row is not None
    assert row["status"] == "transcribing"  # still running: the stream did not just end

    assert received.startswith(b"HTTP/1.1 200")
    assert b"event: created" in received
    assert b"event: started" in received
