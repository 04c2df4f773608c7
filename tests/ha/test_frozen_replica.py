"""A replica frozen inside a claim holds no other replica up."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.migrations import upgrade_to_head
from app.db.queries import queries
from app.db.url import asyncpg_dsn
from tests.fakes import FakeServices, audio_for, new_marker
from tests.pipeline.conftest import wait_terminal
from tests.pipeline.test_claims import add_tasks
from tests.postgres import SessionPostgres
from tests.process import ROOT, ServiceProcess
from tests.waiting import eventually

pytestmark = pytest.mark.slow

NEW_TASKS = 6


async def _claims_found(dsn: str, count: int) -> list[bool]:
    """Whether each claim (rolled back, so each faces the same queue) found a task."""
    lock = await asyncpg.connect(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        # The lock a live worker holds on its owner name, so these claims are a live worker's.
        await lock.execute("SELECT pg_advisory_lock(hashtextextended('claimer', 0))")
        found = []
        for _ in range(count):
            await queries("queue").begin_claim.execute(connection)
            row = await queries("queue").claim_next_task.fetchrow(
                connection, owner="claimer", lease=30, per_user=100, max_claims=20
            )
            await connection.execute("ROLLBACK")
            found.append(row is not None)
        return found
    finally:
        await connection.close()
        await lock.close()


def _frozen_claimer(dsn: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ha.frozen_claimer", dsn, "frozen-replica"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )


@pytest.fixture
async def own_database(postgres: SessionPostgres) -> AsyncIterator[tuple[URL, AsyncEngine]]:
    """A database of its own: the frozen transaction and its churn stay out of the others'."""
    url = await postgres.create_database("ilps_frozen")
    await upgrade_to_head(url)
    engine = create_async_engine(url)
    try:
        yield url, engine
    finally:
        await engine.dispose()
        await postgres.drop_database(url)


async def test_a_replica_frozen_inside_a_claim_holds_up_no_other(
    postgres: SessionPostgres,
    own_database: tuple[URL, AsyncEngine],
    fakes: FakeServices,
    tmp_path: Path,
) -> None:
    database_url, engine = own_database
    await add_tasks(engine, uuid.uuid4(), 1)  # the frozen replica's task
    dsn = asyncpg_dsn(database_url)
    frozen = _frozen_claimer(dsn)
    try:
        assert frozen.stdout is not None
        assert frozen.stdout.readline().strip() == b"claimed"
        frozen.send_signal(signal.SIGSTOP)
        await add_tasks(engine, uuid.uuid4(), 20)  # a backlog for the claims below
        # Each claim passes over the frozen one's task and takes one of the backlog.
        assert await _claims_found(dsn, 20) == [True] * 20
        environment = {
            **postgres.environment(database_url),
            **fakes.environment(),
            "MANAGER_DEBUG_MODE": "false",
            "MANAGER_WORKER_CONCURRENCY": "4",
            "MANAGER_WORKER_POLL_SECONDS": "1",
            "MANAGER_MAX_ACTIVE_TASKS_PER_USER": "100",
        }
        with ServiceProcess(environment, tmp_path / "a.log") as replica:
            async with httpx.AsyncClient(base_url=replica.base_url, timeout=10) as client:
                ids = []
                for _ in range(NEW_TASKS):
                    response = await client.post(
                        "/tasks",
                        data={"title": "frozen", "text_id": str(uuid.uuid4())},
                        files={"file": ("a.pcm", audio_for(new_marker()), "audio/pcm")},
                        headers={"X-User-Id": str(uuid.uuid4())},
                    )
                    assert response.status_code == 201, response.text
                    ids.append(str(response.json()["id"]))
            rows = await asyncio.gather(*(wait_terminal(engine, i, within=60) for i in ids))
        # Still frozen, still inside its transaction: nothing waited for it.
        assert frozen.poll() is None
    finally:
        frozen.send_signal(signal.SIGCONT)
        frozen.kill()
        frozen.wait(timeout=10)

    async def sessions_gone() -> bool:
        async with engine.connect() as connection:
            left = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": "frozen-replica"},
            )
        return bool(left == 0)

    # Its database is dropped next: its open transaction must have ended by then.
    await eventually(sessions_gone, within=30, message="the frozen replica's sessions to end")
    assert [row["status"] for row in rows] == ["completed"] * NEW_TASKS
