"""The app served by a real uvicorn on a loopback port, in a thread of its own.

Streams need this: httpx's ASGITransport buffers a whole response, so an open stream
would never return.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.fakes import audio_for, new_marker
from tests.waiting import eventually_sync


@contextmanager
def live_server(
    app: FastAPI,
    *,
    send_buffer_bytes: int | None = None,
    http: type[asyncio.Protocol] | None = None,
) -> Iterator[str]:
    """Serve `app` (lifespan included) and yield its base URL.

    `send_buffer_bytes` shrinks the kernel's send buffer of every accepted connection (they
    inherit it from the listening socket), so a client that stops reading stalls the server
    after kilobytes rather than megabytes. `http` is uvicorn's protocol class (start.py's).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer_bytes is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {} if http is None else {"http": http}
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, **options)
    )
    loops: list[asyncio.AbstractEventLoop] = []
    serve = server.serve

    async def serve_noting_the_loop(sockets: list[socket.socket] | None = None) -> None:
        loops.append(asyncio.get_running_loop())
        await serve(sockets)

    server.serve = serve_noting_the_loop  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise AssertionError("the live server failed to start (see the log above)")
        return bool(server.started)

    eventually_sync(started, within=30, message="the live server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop; its tasks:\n" + _task_stacks(loops)


def _task_stacks(loops: list[asyncio.AbstractEventLoop]) -> str:
    """Where each task of a server that will not stop is waiting, to tell which part hangs."""
    lines = []
    for loop in loops:
        for task in list(asyncio.all_tasks(loop)):
            frames = task.get_stack(limit=8)
            where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
            lines.append(f"{task.get_name()}: {where}")
    return "\n".join(lines)


@asynccontextmanager
async def sse_events(
    base_url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[ServerSentEvent]]]:
    """Open a stream and iterate its events (pings are not events)."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=30)) as client,
        aconnect_sse(
            client, method, path, headers=dict(headers or {}), json=json_body, params=params
        ) as source,
    ):
        yield source.response, source.aiter_sse()


async def collect(events: AsyncIterator[ServerSentEvent], limit: int = 50) -> list[ServerSentEvent]:
    """Events until the stream ends or `limit` arrived; keep-alive comments are skipped."""
    collected: list[ServerSentEvent] = []
    async for event in events:
        if not event.data:
            continue
        collected.append(event)
        if len(collected) >= limit:
            break
    return collected


def statuses(events: list[ServerSentEvent]) -> list[str]:
    return [json.loads(event.data)["status"] for event in events]


@dataclass
class LiveService:
    app: FastAPI
    base_url: str

    async def create(self, user_id: uuid.UUID) -> tuple[str, str]:
        marker = new_marker()
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.post(
                "/tasks",
                data={"title": "stream", "text_id": str(uuid.uuid4())},
                files={"file": ("a.pcm", audio_for(marker), "application/octet-stream")},
                headers={"X-User-Id": str(user_id)},
            )
        assert response.status_code == 201, response.text
        return str(response.json()["id"]), marker

    @property
    def follower_count(self) -> int:
        return int(self.app.state.runtime.hub.follower_count)
