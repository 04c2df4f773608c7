"""A retried task re-enters the pipeline: after a stage outage, a bulk retry completes them."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.tasks.failures import FailureFilter, failure_groups
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices
from tests.pipeline.conftest import Uploader, event_log, wait_terminal

TOKEN = "operator-secret-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "alice"}


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, operator_token=TOKEN)


async def test_a_bulk_retry_after_an_outage_completes_the_failed_tasks(
    uploader: Uploader, client: httpx.AsyncClient, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.transcribing.always = 400  # permanent: each task fails at its first try
    tasks = [await uploader.create() for _ in range(3)]
    for task_id, _ in tasks:
        assert (await wait_terminal(engine, task_id))["status"] == "failed"
    fakes.transcribing.always = None  # the service is back
    async with engine.connect() as connection:
        [group] = await failure_groups(connection, FailureFilter(window_hours=1))
    assert (group.stage, group.kind, group.tasks) == ("transcribing", "HTTP 400", 3)
    assert group.reason.startswith("transcribing failed: the service answered HTTP 400")

    filter_ = {"stage": "transcribing", "window_hours": 1}
    dry = await client.post("/console/api/retries", json=filter_, headers=OPERATOR)
    assert (dry.json()["matched"], dry.json()["retried"]) == (3, 3)
    real = await client.post(
        "/console/api/retries",
        json={**filter_, "dry_run": False, "reason": "transcribing is back"},
        headers=OPERATOR,
    )
    assert real.json()["retried"] == 3

    for task_id, marker in tasks:
        row = await wait_terminal(engine, task_id)
        assert row["status"] == "completed", row
        # Resumed at the stage that failed: the upload was preprocessed once.
        assert len(fakes.preprocessing.calls_for(marker)) == 1
        statuses = [e["status"] for e in await event_log(engine, task_id) if e["kind"] == "status"]
        assert statuses[-4:] == ["failed", "transcribing", "evaluating", "completed"]


async def test_an_owner_retry_completes_the_task(
    uploader: Uploader, client: httpx.AsyncClient, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.feedback.script.extend([400])
    task_id, marker = await uploader.create()
    failed = await wait_terminal(engine, task_id)
    assert failed["status"] == "failed"

    response = await client.post(
        f"/tasks/{task_id}/retry", headers={"X-User-Id": str(failed["user_id"])}
    )

    assert response.json()["stage"] == "feedback"
    assert (await wait_terminal(engine, task_id))["status"] == "completed"
    assert len(fakes.transcribing.calls_for(marker)) == 1
