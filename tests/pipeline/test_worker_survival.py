"""A worker survives every error, and one task's bad data costs no worker.

Database errors are raised by PostgreSQL itself (a trigger with the SQLSTATE a real
restart or a full server gives), so they reach the workers exactly as asyncpg reports them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.conftest import pipeline_settings
from tests.fakes import FEEDBACK_MISTAKES, FakeServices
from tests.pipeline.conftest import Uploader, event_log, wait_terminal
from tests.waiting import eventually

WORKERS = 2
DIRTY = "\u0000 and \ud800"  # NUL and a lone surrogate: PostgreSQL stores neither
CLEANED = "\ufffd and \ufffd"


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, worker_concurrency=WORKERS, max_active_tasks_per_user=10)


async def readiness(client: httpx.AsyncClient) -> tuple[int, dict[str, object]]:
    response = await client.get("/health/ready")
    return response.status_code, response.json()


async def assert_all_workers_live(client: httpx.AsyncClient) -> None:
    status, body = await readiness(client)
    assert body["workers"] == {"ok": True, "live": WORKERS, "configured": WORKERS}
    assert status == 200


async def assert_a_new_task_completes(uploader: Uploader, engine: AsyncEngine) -> None:
    task_id, _ = await uploader.create()
    row = await wait_terminal(engine, task_id, within=30)
    assert row["status"] == "completed", row["comment"]


async def test_a_detail_with_nul_and_a_lone_surrogate_fails_the_tasks_and_costs_no_worker(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    fakes.transcribing.detail = f"bad input {DIRTY}"
    fakes.transcribing.script.extend([400, 400, 400])
    task_ids = [(await uploader.create())[0] for _ in range(3)]

    for task_id in task_ids:
        row = await wait_terminal(engine, task_id)
        assert row["status"] == "failed"
        assert row["comment"] == (
            f"transcribing failed: the service answered HTTP 400: bad input {CLEANED}"
        )
        last = (await event_log(engine, task_id))[-1]
        assert json.loads(last["detail"]) == {"comment": row["comment"], "kind": "HTTP 400"}

    await assert_all_workers_live(client)
    await assert_a_new_task_completes(uploader, engine)


async def test_a_retry_reason_with_nul_is_stored_cleaned(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    fakes.feedback.detail = f"overloaded {DIRTY}"
    fakes.feedback.script.extend([503])
    task_id, _ = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed", row["comment"]
    retry = next(e for e in await event_log(engine, task_id) if e["kind"] == "retry")
    assert retry["detail"] == f"HTTP 503: overloaded {CLEANED}"
    await assert_all_workers_live(client)


async def test_text_a_stage_returns_is_cleaned_before_it_is_stored(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    fakes.transcribing.dirty_text = DIRTY
    fakes.feedback.dirty_text = DIRTY
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed", row["comment"]
    assert row["result"] == f"p l iː z k ɔː l{CLEANED} {marker}"
    # JSON strings are cleaned too, keys included; NaN (not JSON) becomes null.
    assert row["mistakes"] == [
        *FEEDBACK_MISTAKES,
        {f"note{CLEANED}": f"value{CLEANED}", "score": None},
    ]
    assert len(fakes.transcribing.calls_for(marker)) == 1
    await assert_all_workers_live(client)


# ------------------------------------------------------------ database faults

InjectFault = Callable[[str, str, int], Awaitable[None]]


@pytest.fixture
async def inject_fault(engine: AsyncEngine) -> AsyncIterator[InjectFault]:
    """Make the next `times` writes that let go of a task (fail, retry, complete, hand
    back) raise `sqlstate` with `message`, as PostgreSQL would while starting, full, …"""

    async def inject(sqlstate: str, message: str, times: int) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SEQUENCE IF EXISTS fault_count"))
            await connection.execute(text("CREATE SEQUENCE fault_count"))
            await connection.execute(
                text(
                    f"""
                    CREATE OR REPLACE FUNCTION inject_fault() RETURNS trigger
                    LANGUAGE plpgsql AS $$
                    BEGIN
                        IF OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL
                           AND nextval('fault_count') <= {times} THEN
                            RAISE EXCEPTION '{message}' USING ERRCODE = '{sqlstate}';
                        END IF;
                        RETURN NEW;
                    END $$
                    """
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER inject_fault BEFORE UPDATE ON tasks "
                    "FOR EACH ROW EXECUTE FUNCTION inject_fault()"
                )
            )

    yield inject
    async with engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER IF EXISTS inject_fault ON tasks"))
        await connection.execute(text("DROP FUNCTION IF EXISTS inject_fault()"))
        await connection.execute(text("DROP SEQUENCE IF EXISTS fault_count"))


async def faults_raised(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT last_value FROM fault_count")) or 0)


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("57P01", "terminating connection due to administrator command"),
        ("53300", "sorry, too many clients already"),
    ],
)
async def test_a_database_outage_while_recording_a_failure_costs_no_worker(
    uploader: Uploader,
    fakes: FakeServices,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    inject_fault: InjectFault,
    sqlstate: str,
    message: str,
) -> None:
    await inject_fault(sqlstate, message, 3)
    fakes.transcribing.always = 400
    task_ids = [(await uploader.create())[0] for _ in range(3)]

    for task_id in task_ids:
        row = await wait_terminal(engine, task_id)
        assert row["status"] == "failed"
        assert row["comment"] == "transcribing failed: the service answered HTTP 400: fake failure"
    assert await faults_raised(engine) >= 3

    fakes.transcribing.always = None
    await assert_all_workers_live(client)
    await assert_a_new_task_completes(uploader, engine)


async def test_a_write_error_nobody_recognises_costs_no_worker(
    uploader: Uploader,
    fakes: FakeServices,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    inject_fault: InjectFault,
) -> None:
    # Not retried in place: the task is left to its lease, then claimed and run again.
    await inject_fault("XX000", "something nobody expected", 1)
    fakes.transcribing.always = 400
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id, within=30)

    assert row["status"] == "failed"
    assert row["comment"] == "transcribing failed: the service answered HTTP 400: fake failure"
    assert len(fakes.transcribing.calls_for(marker)) == 2
    fakes.transcribing.always = None
    await assert_all_workers_live(client)
    await assert_a_new_task_completes(uploader, engine)


async def test_readiness_fails_when_a_worker_is_gone(client: httpx.AsyncClient) -> None:
    await assert_all_workers_live(client)
    worker = next(task for task in asyncio.all_tasks() if task.get_name() == "worker-0")
    worker.cancel()

    async def reported() -> tuple[int, dict[str, object]] | None:
        status, body = await readiness(client)
        return (status, body) if status == 503 else None

    _, body = await eventually(reported, message="readiness to report the lost worker")
    assert body["status"] == "not ready"
    assert body["workers"] == {"ok": False, "live": WORKERS - 1, "configured": WORKERS}
