"""The claim itself: its cost with a large backlog, and taking over from dead owners."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.queries import queries
from app.pipeline import queue
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("clean_database")

HeldLock = Callable[[str], AbstractAsyncContextManager[None]]
CLAIM = queries("queue").claim_next_task


class _RolledBack(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
def liveness_lock(engine: AsyncEngine) -> HeldLock:
    """Hold an owner's liveness lock for a block, as its process's lock connection does."""

    @asynccontextmanager
    async def hold(owner: str) -> AsyncIterator[None]:
        async with engine.connect() as connection:
            await connection.execute(
                text("SELECT pg_advisory_lock(hashtextextended(:owner, 0))"), {"owner": owner}
            )
            await connection.commit()
            try:
                yield
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock_all()"))
                await connection.commit()

    return hold


async def add_tasks(engine: AsyncEngine, user_id: uuid.UUID, count: int) -> None:
    """`count` waiting tasks of one user, created a millisecond apart, oldest first."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO tasks (user_id, text_id, created_at)
                SELECT :user_id, gen_random_uuid(),
                       now() - interval '1 day' + g * interval '1 millisecond'
                FROM generate_series(1, :count) g
                """
            ),
            {"user_id": user_id, "count": count},
        )


async def lease_oldest(
    engine: AsyncEngine,
    user_id: uuid.UUID,
    *,
    owner: str,
    count: int = 1,
    seconds: float = 3600,
    leased_at: str = "now()",
    leased_on: str = "server_identity()",
) -> list[uuid.UUID]:
    async with engine.begin() as connection:
        rows = await connection.execute(
            text(
                f"""
                UPDATE tasks SET lease_owner = :owner, status = 'preprocessing',
                    lease_expires_at = now() + make_interval(secs => :seconds),
                    leased_at = {leased_at}, leased_on = {leased_on}
                WHERE id IN (SELECT id FROM tasks WHERE user_id = :user_id
                             ORDER BY created_at LIMIT :count)
                RETURNING id
                """
            ),
            {"owner": owner, "seconds": seconds, "user_id": user_id, "count": count},
        )
        return [row[0] for row in rows]


async def driver(connection: AsyncConnection) -> asyncpg.Connection:
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    return raw


async def claim(
    engine: AsyncEngine, owner: str, per_user: int = 2, max_claims: int = 5
) -> queue.HeldTask | None:
    async with engine.connect() as connection:
        return await queue.claim_next_task(
            await driver(connection),
            owner=owner,
            lease_seconds=30,
            per_user=per_user,
            max_claims=max_claims,
        )


async def claim_buffers(connection: AsyncConnection, owner: str) -> int:
    """Shared buffers the claim statement touches (EXPLAIN ANALYZE, rolled back)."""
    params: dict[str, Any] = {"owner": owner, "lease": 30, "per_user": 2, "max_claims": 5}
    compiled = CLAIM.clause.bindparams(**params).compile(
        compile_kwargs={"literal_binds": True}, dialect=connection.dialect
    )
    transaction = await connection.begin()
    try:
        # As SQL already rendered: a colon in its comments is no parameter.
        explained = await connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}"
        )
        plan = explained.scalar_one()
    finally:
        await transaction.rollback()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


async def test_a_backlog_at_the_cap_costs_the_claim_nothing_more(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    heavy, light = uuid.uuid4(), uuid.uuid4()
    buffers: dict[int, int] = {}
    async with liveness_lock("busy"), liveness_lock("me"):
        for backlog in (1_000, 20_000):
            async with engine.begin() as connection:
                await connection.execute(text("TRUNCATE tasks CASCADE"))
            await add_tasks(engine, heavy, backlog)
            await lease_oldest(engine, heavy, owner="busy", count=2)  # the heavy user's cap
            await add_tasks(engine, light, 1)
            async with engine.begin() as connection:
                await connection.execute(text("ANALYZE tasks"))
            async with engine.connect() as connection:
                buffers[backlog] = await claim_buffers(connection, "me")

            claimed = await claim(engine, "me")

            assert claimed is not None
            assert claimed.user_id == light
            assert await claim(engine, "me") is None  # the heavy user is at the cap

    # Twenty times the backlog, and not one page more than the margin of a deeper index.
    assert buffers[20_000] <= buffers[1_000] + 8, buffers
    assert buffers[20_000] < 200, buffers


async def test_a_dead_owner_s_task_is_claimed_before_its_lease_ends(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 1)
    [task_id] = await lease_oldest(engine, user, owner="gone", seconds=3600)

    async with liveness_lock("me"):
        claimed = await claim(engine, "me")

    assert claimed is not None
    assert claimed.id == task_id
    assert claimed.status.value == "preprocessing"  # resumed where the dead owner was


async def test_a_live_owner_keeps_its_task_until_its_lock_is_gone(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 1)
    [task_id] = await lease_oldest(engine, user, owner="alive", seconds=3600)

    async with liveness_lock("me"):
        async with liveness_lock("alive"):
            assert await claim(engine, "me") is None
        claimed = await claim(engine, "me")

    assert claimed is not None
    assert claimed.id == task_id


async def test_leases_stamped_before_a_server_restart_are_judged_by_the_clock(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    # After a restart every lock is free until its owner reconnects: a lease taken before
    # it does not prove its owner is gone, so it is left alone until it runs out.
    user = uuid.uuid4()
    await add_tasks(engine, user, 2)
    before_restart = "'1234/00000001/1700000000'"  # another server's identity
    await lease_oldest(engine, user, owner="reconnecting", count=2, leased_on=before_restart)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE tasks SET lease_expires_at = now() - interval '1 second' "
                 "WHERE id = (SELECT id FROM tasks ORDER BY created_at DESC LIMIT 1)")
        )  # fmt: skip

    async with liveness_lock("me"):
        first = await claim(engine, "me", per_user=5)
        second = await claim(engine, "me", per_user=5)

    assert first is not None  # the one whose clock ran out
    assert second is None  # the other is still its owner's


async def test_a_process_without_its_liveness_lock_claims_nothing(engine: AsyncEngine) -> None:
    await add_tasks(engine, uuid.uuid4(), 1)

    assert await claim(engine, "unlocked") is None


async def test_dead_owners_leases_do_not_count_towards_the_cap(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 3)
    await lease_oldest(engine, user, owner="gone", count=2)
    async with liveness_lock("me"):
        claimed = [await claim(engine, "me") for _ in range(3)]

    assert [task is not None for task in claimed] == [True, True, False]  # exactly the cap


async def test_renewing_without_the_lock_does_not_restamp_the_lease(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 1)
    before = "now() - interval '1 hour'"
    [task_id] = await lease_oldest(engine, user, owner="me", leased_at=before)

    async def renew_and_read() -> tuple[bool, Any]:
        async with engine.connect() as connection:
            renewed = await queue.renew_lease(
                await driver(connection), task_id, owner="me", lease_seconds=30
            )
            await connection.commit()
            stamped = await connection.scalar(
                text("SELECT leased_at > now() - interval '1 minute' FROM tasks WHERE id = :id"),
                {"id": task_id},
            )
        return renewed, stamped

    assert await renew_and_read() == (True, False)
    async with liveness_lock("me"):
        assert await renew_and_read() == (True, True)


async def test_the_user_queue_follows_creation_finish_reopening_and_deletion(
    engine: AsyncEngine,
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 3)

    async def oldest() -> Any:
        async with engine.connect() as connection:
            return await connection.scalar(
                text(
                    "SELECT oldest_unfinished_at = (SELECT min(created_at) FROM tasks "
                    "WHERE user_id = :u AND status NOT IN ('completed', 'failed')) "
                    "OR (oldest_unfinished_at IS NULL AND NOT EXISTS (SELECT 1 FROM tasks "
                    "WHERE user_id = :u AND status NOT IN ('completed', 'failed'))) "
                    "FROM queue_users WHERE user_id = :u"
                ),
                {"u": user},
            )

    async def change(statement: str) -> None:
        async with engine.begin() as connection:
            await connection.execute(text(statement), {"u": user})

    async def queued() -> Any:
        async with engine.connect() as connection:
            return await connection.scalar(
                text("SELECT oldest_unfinished_at FROM queue_users WHERE user_id = :u"),
                {"u": user},
            )

    assert await oldest() is True
    await change(
        "UPDATE tasks SET status = 'completed' WHERE id = "
        "(SELECT id FROM tasks WHERE user_id = :u ORDER BY created_at LIMIT 1)"
    )
    assert await oldest() is True
    await change("UPDATE tasks SET status = 'completed' WHERE user_id = :u")
    assert await oldest() is True
    assert await queued() is None
    # A finished task put back (a retry) makes its user wait again.
    await change(
        "UPDATE tasks SET status = 'transcribing' WHERE id = "
        "(SELECT id FROM tasks WHERE user_id = :u ORDER BY created_at DESC LIMIT 1)"
    )
    assert await oldest() is True
    assert await queued() is not None
    await change("DELETE FROM tasks WHERE user_id = :u AND status <> 'completed'")
    assert await oldest() is True
    assert await queued() is None


async def test_finished_tasks_cost_the_claim_nothing_under_a_generic_plan(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    # Prepared statements switch to a generic plan after a few runs; the claim must still
    # reach a user's waiting task through the partial index of unfinished tasks, not by
    # reading every task the user ever finished.
    user = uuid.uuid4()
    await add_tasks(engine, user, 5_000)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE tasks SET status = 'completed', completed_at = now()")
        )
    await add_tasks(engine, user, 1)
    values = {"owner": "'me'", "lease": "30", "max_claims": "5", "per_user": "2"}
    arguments = ", ".join(values[name] for name in CLAIM.parameters)
    async with liveness_lock("me"), engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        # As autovacuum would: the finished tasks' old entries leave the partial index.
        await raw.execute("VACUUM ANALYZE tasks")
        await raw.execute(f"PREPARE generic_claim AS {CLAIM.driver_sql}")
        try:
            async with raw.transaction():  # the claim runs, then is rolled back
                await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                plan = await raw.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE generic_claim({arguments})"
                )
                raise _RolledBack
        except _RolledBack:
            pass
        finally:
            await raw.execute("DEALLOCATE generic_claim")
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    touched = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
    assert touched < 200, touched


# ------------------------------------------------- the claim enters the first stage


async def history(engine: AsyncEngine, task_id: uuid.UUID) -> list[tuple[int, str, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT seq, kind, status FROM task_events WHERE task_id = :id ORDER BY seq"),
            {"id": task_id},
        )
        return [(row.seq, row.kind, row.status) for row in rows]


async def task_state(engine: AsyncEngine, task_id: uuid.UUID) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT status, last_event_seq, claim_count, lease_owner FROM tasks "
                    "WHERE id = :id"
                ),
                {"id": task_id},
            )
        ).one()
        return dict(row._mapping)


async def test_the_claim_starts_a_new_task_and_records_each_step(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 1)
    heard: list[str] = []
    async with engine.connect() as listening:
        listener = await driver(listening)

        def on_notify(*args: Any) -> None:
            heard.append(args[3])

        await listener.add_listener("task_events", on_notify)
        async with liveness_lock("me"):
            claimed = await claim(engine, "me")
        assert claimed is not None

        async def both_heard() -> list[str] | None:
            return heard if len(heard) == 2 else None

        await eventually(both_heard, within=5, message="the two notifications")
        await listener.remove_listener("task_events", on_notify)

    assert claimed.status.value == "preprocessing"
    assert await history(engine, claimed.id) == [
        (1, "status", "started"),
        (2, "status", "preprocessing"),
    ]
    assert await task_state(engine, claimed.id) == {
        "status": "preprocessing",
        "last_event_seq": 2,
        "claim_count": 0,
        "lease_owner": "me",
    }
    assert heard == [f"{claimed.id}:1", f"{claimed.id}:2"]


async def set_task(engine: AsyncEngine, user: uuid.UUID, assignments: str) -> uuid.UUID:
    async with engine.begin() as connection:
        return uuid.UUID(
            str(
                await connection.scalar(
                    text(f"UPDATE tasks SET {assignments} WHERE user_id = :user RETURNING id"),
                    {"user": user},
                )
            )
        )


async def add_wav(engine: AsyncEngine, task_id: uuid.UUID) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO task_audio (task_id, kind, content, filename, content_type, size) "
                "VALUES (:id, 'preprocessed', 'RIFF', 'audio.wav', 'audio/wav', 4)"
            ),
            {"id": task_id},
        )


async def test_a_resumed_task_enters_the_first_stage_without_output(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    started, transcribed = uuid.uuid4(), uuid.uuid4()
    await add_tasks(engine, started, 1)
    await add_tasks(engine, transcribed, 1)
    # One stopped between `started` and its first stage; the other's holder vanished
    # after transcribing (its lease expired), with the WAV and the transcription stored.
    started_id = await set_task(engine, started, "status = 'started', last_event_seq = 1")
    transcribed_id = await set_task(
        engine,
        transcribed,
        "status = 'evaluating', result = 'a b', last_event_seq = 4, lease_owner = 'gone', "
        "lease_expires_at = now() - interval '1 second', leased_at = now(), "
        "leased_on = server_identity()",
    )
    await add_wav(engine, transcribed_id)

    async with liveness_lock("me"):
        first = await claim(engine, "me")
        second = await claim(engine, "me")

    assert first is not None
    assert second is not None
    by_id = {first.id: first, second.id: second}
    assert by_id[started_id].status.value == "preprocessing"
    assert await history(engine, started_id) == [(2, "status", "preprocessing")]
    assert by_id[transcribed_id].status.value == "evaluating"  # no new transition
    assert by_id[transcribed_id].claim_count == 1  # it took over an expired lease
    assert by_id[transcribed_id].has_preprocessed_audio
    assert await history(engine, transcribed_id) == []
    assert (await task_state(engine, transcribed_id))["last_event_seq"] == 4


async def test_a_task_interrupted_too_often_is_claimed_but_not_moved(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    user = uuid.uuid4()
    await add_tasks(engine, user, 1)
    task_id = await set_task(
        engine,
        user,
        "status = 'created', claim_count = 2, lease_owner = 'gone', "
        "lease_expires_at = now() - interval '1 second', leased_at = now()",
    )

    async with liveness_lock("me"):
        claimed = await claim(engine, "me", max_claims=3)

    assert claimed is not None
    assert claimed.claim_count == 3  # the worker fails it next
    assert claimed.status.value == "created"
    assert await history(engine, task_id) == []
    assert await task_state(engine, task_id) == {
        "status": "created",
        "last_event_seq": 0,
        "claim_count": 3,
        "lease_owner": "me",
    }


async def test_the_claim_serves_users_oldest_first_up_to_the_cap(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    early, late = uuid.uuid4(), uuid.uuid4()
    await add_tasks(engine, early, 3)
    await add_tasks(engine, late, 2)  # created a little later than `early`'s

    async with liveness_lock("me"):
        claimed = [await claim(engine, "me", per_user=1) for _ in range(3)]

    assert [task.user_id if task else None for task in claimed] == [early, late, None]


async def test_a_claim_stamps_the_server_its_lock_lives_on(
    engine: AsyncEngine, liveness_lock: HeldLock
) -> None:
    await add_tasks(engine, uuid.uuid4(), 1)
    async with liveness_lock("me"):
        claimed = await claim(engine, "me")
    assert claimed is not None
    async with engine.connect() as connection:
        stamped, server = (
            await connection.execute(
                text("SELECT leased_on, server_identity() FROM tasks WHERE id = :id"),
                {"id": claimed.id},
            )
        ).one()
    assert stamped == server
    assert server.count("/") == 2  # cluster / timeline / postmaster start
