"""A stage write retried after an ambiguous commit changes nothing the second time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.status import TaskStatus
from app.pipeline import queue
from tests.fakes import FakeServices
from tests.pipeline.conftest import Uploader, event_log, wait_terminal
from tests.pipeline.test_claims import add_tasks, claim, driver, history

pytestmark = pytest.mark.usefixtures("clean_database")


@asynccontextmanager
async def held_task(
    engine: AsyncEngine, owner: str
) -> AsyncIterator[tuple[queue.HeldTask, asyncpg.Connection]]:
    """One new task claimed by `owner`, whose liveness lock is held meanwhile; yields
    (the claimed task, a raw driver connection for the stage writes)."""
    await add_tasks(engine, uuid.uuid4(), 1)
    async with engine.connect() as locked:
        await locked.execute(text("SELECT pg_advisory_lock(hashtextextended(:o, 0))"), {"o": owner})
        await locked.commit()
        claimed = await claim(engine, owner)
        assert claimed is not None
        async with engine.connect() as connection:
            yield claimed, await driver(connection)
        await locked.execute(text("SELECT pg_advisory_unlock_all()"))
        await locked.commit()


async def test_each_stage_write_run_twice_records_one_transition(engine: AsyncEngine) -> None:
    async with held_task(engine, "me") as (claimed, raw):

        async def preprocessed() -> bool:
            return await queue.store_preprocessed_audio(raw, claimed.id, owner="me", wav=b"RIFF")

        async def transcribed() -> bool:
            return await queue.store_transcription(raw, claimed.id, owner="me", transcription="a")

        async def completed() -> bool:
            return await queue.complete_task(raw, claimed.id, owner="me", accuracy=1.0, mistakes=[])

        writes = [
            (preprocessed, TaskStatus.TRANSCRIBING),
            (transcribed, TaskStatus.EVALUATING),
            (completed, TaskStatus.COMPLETED),
        ]
        for write, reached in writes:
            assert await write() is True
            # The retry of a write whose commit went through: nothing moves...
            assert await write() is False
            # ...and the runner learns that the first try took effect.
            assert await queue.moved_to(raw, claimed.id, owner="me", status=reached)

    assert [status for _, _, status in await history(engine, claimed.id)] == [
        "started",
        "preprocessing",
        "transcribing",
        "evaluating",
        "completed",
    ]


async def test_a_write_of_another_owner_has_not_moved_the_task(engine: AsyncEngine) -> None:
    async with held_task(engine, "me") as (claimed, raw):
        assert not await queue.store_transcription(
            raw, claimed.id, owner="me", transcription="out of order"
        )
        assert not await queue.moved_to(
            raw, claimed.id, owner="someone else", status=TaskStatus.PREPROCESSING
        )


async def test_a_write_whose_answer_was_lost_is_not_repeated(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transcription's write commits, then the connection drops before the answer: the
    # runner retries it, the retry changes nothing, and the task goes on as written.
    real = queue.store_transcription
    lost: list[bool] = []

    async def commits_then_drops(connection: Any, *args: Any, **kwargs: Any) -> bool:
        moved = await real(connection, *args, **kwargs)
        if not lost:
            lost.append(moved)
            raise ConnectionResetError("the answer was lost")
        return moved

    monkeypatch.setattr(queue, "store_transcription", commits_then_drops)
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed", row["comment"]
    assert lost == [True]
    assert len(fakes.transcribing.calls_for(marker)) == 1  # not called again
    statuses = [event["status"] for event in await event_log(engine, task_id)]
    assert statuses == [
        "created", "started", "preprocessing", "transcribing", "evaluating", "completed"
    ]  # fmt: skip
