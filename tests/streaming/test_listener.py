"""The LISTEN connection: it survives every error, and a late first connection re-reads."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.history import EVENTS_CHANNEL
from app.db.url import asyncpg_dsn
from app.events.listener import TaskEventListener
from app.main import create_app
from tests.fakes import FakeServices
from tests.live import LiveService, collect, live_server, sse_events, statuses
from tests.pipeline.conftest import wait_terminal
from tests.waiting import eventually

REAL_CONNECT = asyncpg.connect


def _is_listen_connection(kwargs: dict[str, Any]) -> bool:
    name: str = kwargs.get("server_settings", {}).get("application_name", "")
    return name.endswith("/listen")


async def _terminate(engine: AsyncEngine, pid: int | None) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def _notify(engine: AsyncEngine, payload: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": EVENTS_CHANNEL, "payload": payload},
        )


async def test_the_listener_survives_an_interface_error_while_reconnecting(
    database_url: URL, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed_connections_left = 0

    async def connect(*args: Any, **kwargs: Any) -> Any:
        nonlocal closed_connections_left
        connection = await REAL_CONNECT(*args, **kwargs)
        if _is_listen_connection(kwargs) and closed_connections_left:
            closed_connections_left -= 1
            # As after a drop between connecting and LISTEN: the next call on it raises
            # asyncpg's InterfaceError ("connection is closed"), not a PostgresError.
            await connection.close()
        return connection

    monkeypatch.setattr(asyncpg, "connect", connect)
    listener = TaskEventListener(asyncpg_dsn(database_url), max_backoff=0.2)
    notified: list[tuple[uuid.UUID, int]] = []
    reconnects: list[None] = []
    listener.on_notification(lambda task_id, seq: notified.append((task_id, seq)))
    listener.on_reconnect(lambda: reconnects.append(None))
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), timeout=20)
        old_pid = listener.backend_pid
        reconnects.clear()
        closed_connections_left = 2
        await _terminate(engine, old_pid)

        await eventually(
            lambda: listener.connected.is_set() and listener.backend_pid != old_pid,
            message="the listener to reconnect past two closed connections",
        )
        assert closed_connections_left == 0
        assert listener.state == "connected"
        assert reconnects == [None], "followed tasks are re-read once, after the reconnection"
        task_id = uuid.uuid4()
        await _notify(engine, f"{task_id}:7")
        await eventually(
            lambda: (task_id, 7) in notified,
            message="a notification on the new connection",
        )
    finally:
        await listener.stop()
    after_stop: str = listener.state  # a fresh read (mypy narrowed the property above)
    assert after_stop == "stopped"


@pytest.fixture
def listen_gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """While the event is clear, every LISTEN connection attempt is refused."""
    gate = threading.Event()

    async def connect(*args: Any, **kwargs: Any) -> Any:
        if _is_listen_connection(kwargs) and not gate.is_set():
            raise ConnectionRefusedError("the LISTEN connection is refused (test)")
        return await REAL_CONNECT(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", connect)
    return gate


@pytest.fixture
def gated_live(
    listen_gate: threading.Event, settings: Settings, database_url: URL, clean_database: None
) -> Iterator[LiveService]:
    app = create_app(settings, database_url=database_url)
    with live_server(app) as base_url:
        yield LiveService(app=app, base_url=base_url)


async def _readiness(live: LiveService) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as client:
        return await client.get("/health/ready")


async def test_a_follower_subscribed_before_the_first_listen_connection_gets_the_end(
    gated_live: LiveService, listen_gate: threading.Event, engine: AsyncEngine,
    fakes: FakeServices,
) -> None:  # fmt: skip
    live = gated_live
    fakes.preprocessing.latency = 1.0
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    async with sse_events(
        live.base_url, "GET", f"/tasks/{task_id}/events", params={"user_id": str(user_id)}
    ) as (_, events):
        first = await collect(events, limit=1)
        # The workers poll, so the task finishes; its notifications go nowhere.
        await wait_terminal(engine, task_id)
        listen_gate.set()
        rest = await asyncio.wait_for(collect(events), timeout=30)

    assert statuses(first + rest)[-1] == "completed"


async def test_readiness_reports_the_listener_state(
    gated_live: LiveService, listen_gate: threading.Event, engine: AsyncEngine
) -> None:
    live = gated_live
    listener = live.app.state.runtime.listener

    before = await _readiness(live)
    assert before.status_code == 200  # the database answers; live updates are only late
    assert before.json()["listener"] == {"ok": True, "state": "connecting"}

    listen_gate.set()
    await eventually(
        lambda: listener.state == "connected",
        message="the listener to connect",
    )
    assert (await _readiness(live)).json()["listener"] == {"ok": True, "state": "connected"}

    listen_gate.clear()
    await _terminate(engine, listener.backend_pid)
    await eventually(
        lambda: listener.state == "reconnecting",
        message="the listener to notice the drop",
    )
    during = await _readiness(live)
    assert during.status_code == 200
    assert during.json()["listener"] == {"ok": True, "state": "reconnecting"}
    listen_gate.set()
    await eventually(
        lambda: listener.state == "connected",
        message="the listener to reconnect",
    )


async def test_readiness_is_503_when_the_listener_task_is_gone(
    gated_live: LiveService, listen_gate: threading.Event
) -> None:
    """Cannot happen by an error any more; a cancelled task stands in for any other end."""
    live = gated_live
    listen_gate.set()
    listener = live.app.state.runtime.listener
    task = listener._task
    task.get_loop().call_soon_threadsafe(task.cancel)
    await eventually(task.done, message="the task to end")

    response = await _readiness(live)
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert response.json()["listener"] == {"ok": False, "state": "stopped"}
