"""Only claims that took over an expired lease count as interrupted attempts."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from tests.conftest import pipeline_settings, serve
from tests.fakes import FakeServices
from tests.pipeline.conftest import Uploader, event_log, wait_terminal

MAX_CLAIMS = 3


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, pipeline_max_attempts=10, pipeline_max_claims=MAX_CLAIMS)


async def test_retries_of_a_flaky_stage_are_not_interrupted_attempts(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine
) -> None:
    # Twice as many retries as claims allowed: each retry is a fresh claim of the task.
    fakes.transcribing.script.extend([503] * (2 * MAX_CLAIMS))
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed", row["comment"]
    assert len(fakes.transcribing.calls_for(marker)) == 2 * MAX_CLAIMS + 1
    assert row["claim_count"] == 0


async def test_a_task_whose_holders_keep_vanishing_is_abandoned(
    fakes: FakeServices, engine: AsyncEngine, database_url: URL, clean_database: None
) -> None:
    api_only = pipeline_settings(fakes, worker_concurrency=0)
    async with serve(create_app(api_only, database_url=database_url)) as client:
        task_id, marker = await Uploader(client).create()
    # As a process killed mid-stage leaves it, after MAX_CLAIMS - 1 such holders before.
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE tasks SET status = 'transcribing', lease_owner = 'vanished', "
                "lease_expires_at = now() - interval '1 second', claim_count = :earlier "
                "WHERE id = :id"
            ),
            {"id": task_id, "earlier": MAX_CLAIMS - 1},
        )

    settings = pipeline_settings(fakes, pipeline_max_attempts=10, pipeline_max_claims=MAX_CLAIMS)
    async with serve(create_app(settings, database_url=database_url)):
        row = await wait_terminal(engine, task_id)

    assert row["status"] == "failed"
    assert row["comment"] == f"abandoned after {MAX_CLAIMS} interrupted attempts"
    assert row["claim_count"] == MAX_CLAIMS
    assert fakes.transcribing.calls_for(marker) == []
    assert (await event_log(engine, task_id))[-1]["status"] == "failed"
