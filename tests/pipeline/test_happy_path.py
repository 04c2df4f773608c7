"""A task goes created → … → completed, with each stage called once, as the contract says."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes import FEEDBACK_ACCURACY, FEEDBACK_MISTAKES, FakeServices
from tests.pipeline.conftest import Uploader, event_log, wait_terminal


async def test_a_task_completes_with_exactly_what_the_services_returned(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    user_id, text_id = uuid.uuid4(), uuid.uuid4()
    task_id, marker = await uploader.create(user_id, text_id)

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed", row["comment"]
    assert row["result"] == f"p l iː z k ɔː l {marker}"
    assert row["accuracy"] == FEEDBACK_ACCURACY
    assert row["mistakes"] == FEEDBACK_MISTAKES
    assert row["comment"] is None
    assert row["completed_at"] is not None
    assert row["lease_owner"] is None

    for stage in fakes.all():
        assert len(stage.calls_for(marker)) == 1, stage.name
    assert fakes.preprocessing.calls_for(marker)[0].request == {
        "filename": "audio.pcm",
        "content_type": "application/octet-stream",
        "size": 4096,
    }
    assert fakes.transcribing.calls_for(marker)[0].request == {
        "lang": "english",
        "filename": "audio.wav",
        "content_type": "audio/wav",
    }
    assert fakes.feedback.calls_for(marker)[0].request == {
        "text_id": str(text_id),
        "actual_result": row["result"],
    }

    statuses = [event["status"] for event in await event_log(engine, task_id)]
    assert statuses == [
        "created", "started", "preprocessing", "transcribing", "evaluating", "completed"
    ]  # fmt: skip

    legacy = (await client.post(f"/{task_id}", json={"user_id": str(user_id)})).json()
    assert legacy["status"] == "completed"
    assert legacy["accuracy"] == FEEDBACK_ACCURACY
    assert legacy["mistakes"] == FEEDBACK_MISTAKES


async def test_the_resource_detail_reports_each_stage(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    fakes.transcribing.script.extend([503])
    user_id = uuid.uuid4()
    task_id, _ = await uploader.create(user_id)
    await wait_terminal(engine, task_id)

    detail = (await client.get(f"/tasks/{task_id}", headers={"X-User-Id": str(user_id)})).json()

    stages = {stage["stage"]: stage for stage in detail["stages"]}
    assert list(stages) == ["preprocessing", "transcribing", "feedback"]
    assert stages["preprocessing"]["attempts"] == 1
    assert stages["transcribing"]["attempts"] == 2
    for stage in stages.values():
        started = datetime.fromisoformat(stage["started_at"])
        finished = datetime.fromisoformat(stage["finished_at"])
        # Each stage ends in a later transaction than the one it began in.
        assert finished > started
        assert stage["duration_seconds"] == (finished - started).total_seconds()
