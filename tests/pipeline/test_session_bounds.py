"""No session of ours can hold the others up: bounded sessions, claims without a shared lock."""

from __future__ import annotations

import socket
import uuid

import asyncpg
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.compat import connection_socket
from app.db.engine import create_database
from app.db.queries import queries
from app.db.sessions import SessionOptions, connect
from app.db.url import asyncpg_dsn
from app.pipeline import queue
from tests.pipeline.test_claims import add_tasks, driver
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("clean_database")

BOUNDS = {
    "statement_timeout": "30s",
    "lock_timeout": "5s",
    "idle_in_transaction_session_timeout": "10s",
}


async def _bounds(connection: asyncpg.Connection) -> dict[str, str]:
    return {name: await connection.fetchval(f"SHOW {name}") for name in BOUNDS}


async def test_pooled_and_dedicated_connections_are_bounded(database_url: URL) -> None:
    database = create_database(database_url, pool_size=1, application_name="bounds")
    try:
        async with database.driver() as pooled:
            assert await _bounds(pooled) == BOUNDS
    finally:
        await database.dispose()
    dedicated = await connect(
        asyncpg_dsn(database_url), SessionOptions(), application_name="bounds/listen"
    )
    try:
        assert await _bounds(dedicated) == BOUNDS
        sock = connection_socket(dedicated)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10000
    finally:
        await dedicated.close()


async def test_a_session_left_inside_a_transaction_is_ended(database_url: URL) -> None:
    options = SessionOptions(idle_in_transaction_timeout_seconds=0.3)
    stalled = await connect(asyncpg_dsn(database_url), options, application_name="stalled")
    try:
        await stalled.execute("BEGIN; SELECT pg_advisory_xact_lock(42)")
        # As a frozen process would: nothing more is sent; the server ends the session.
        await eventually(stalled.is_closed, within=10, message="the stalled session ended")
    finally:
        await stalled.close()


async def test_a_claim_left_open_holds_up_no_other_claim(engine: AsyncEngine) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    await add_tasks(engine, first, 1)
    await add_tasks(engine, second, 1)
    async with engine.connect() as locks, engine.connect() as frozen, engine.connect() as other:
        for owner in ("frozen", "other"):
            await locks.execute(
                text("SELECT pg_advisory_lock(hashtextextended(:o, 0))"), {"o": owner}
            )
        await locks.commit()
        stalled = await driver(frozen)
        # The claim's transaction as a process frozen before its COMMIT leaves it.
        await queries("queue").begin_claim.execute(stalled)
        held = await queries("queue").claim_next_task.fetchrow(
            stalled, owner="frozen", lease=30, per_user=2, max_claims=5
        )
        assert held is not None
        assert held["user_id"] == first
        claimer = await driver(other)
        # Bounded by the statement's own lock_timeout were it to wait: it must not wait.
        await claimer.execute("SET lock_timeout = '1s'")
        claimed = await queue.claim_next_task(
            claimer, owner="other", lease_seconds=30, per_user=2, max_claims=5
        )
        assert claimed is not None
        assert claimed.user_id == second
        await stalled.execute("ROLLBACK")
        await locks.execute(text("SELECT pg_advisory_unlock_all()"))
        await locks.commit()


async def test_concurrent_claims_keep_the_per_user_cap(engine: AsyncEngine) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 10)
    async with engine.connect() as locks, engine.connect() as a, engine.connect() as b:
        await locks.execute(text("SELECT pg_advisory_lock(hashtextextended('x', 0))"))
        await locks.commit()
        early, late = await driver(a), await driver(b)
        # `late` takes its snapshot before `early` commits its claim of the same user.
        await queries("queue").begin_claim.execute(late)
        await late.fetchval("SELECT 1")
        assert await queue.claim_next_task(
            early, owner="x", lease_seconds=30, per_user=1, max_claims=5
        )
        with pytest.raises(asyncpg.SerializationError):
            await queries("queue").claim_next_task.fetchrow(
                late, owner="x", lease=30, per_user=1, max_claims=5
            )
        await late.execute("ROLLBACK")
        # Retried with a fresh snapshot, the claim sees the cap reached.
        assert (
            await queue.claim_next_task(late, owner="x", lease_seconds=30, per_user=1, max_claims=5)
            is None
        )
        await locks.execute(text("SELECT pg_advisory_unlock_all()"))
        await locks.commit()
