"""Transient faults are retried with backoff; permanent ones fail at once with a clear comment."""

from __future__ import annotations

import io

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from tests.conftest import parsed_json_lines, pipeline_settings, serve
from tests.fakes import FakeServices, unused_port
from tests.pipeline.conftest import Uploader, event_log, wait_terminal


async def test_503_twice_then_200_completes(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.transcribing.script.extend([503, 503])
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed"
    assert [call.outcome for call in fakes.transcribing.calls_for(marker)] == ["503", "503", "ok"]
    assert len(fakes.preprocessing.calls_for(marker)) == 1
    retries = [event for event in await event_log(engine, task_id) if event["kind"] == "retry"]
    assert [(r["stage"], r["attempt"]) for r in retries] == [
        ("transcribing", 1),
        ("transcribing", 2),
    ]
    assert "HTTP 503: fake failure" in retries[0]["detail"]


async def test_pipeline_log_lines_carry_the_task_and_stage(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, json_lines: io.StringIO
) -> None:
    fakes.transcribing.script.extend([503])
    task_id, _ = await uploader.create()
    await wait_terminal(engine, task_id)

    retry = next(
        line for line in parsed_json_lines(json_lines) if "retrying" in str(line["message"])
    )
    assert retry["task_id"] == task_id
    assert retry["stage"] == "transcribing"
    assert retry["level"] == "WARNING"


async def test_429_is_retried(uploader: Uploader, fakes: FakeServices, engine: AsyncEngine) -> None:
    fakes.feedback.script.extend([429])
    task_id, _ = await uploader.create()
    assert (await wait_terminal(engine, task_id))["status"] == "completed"


async def test_a_timeout_is_retried(
    fakes: FakeServices, engine: AsyncEngine, database_url: URL, clean_database: None
) -> None:
    # A short client timeout for this test only: its own app, not a module-wide fixture.
    overrides = fakes.settings()
    overrides["service_transcribing"] = {**overrides["service_transcribing"], "timeout": 0.3}
    settings = pipeline_settings(fakes, **overrides)
    fakes.transcribing.hang_seconds = 1.0
    fakes.transcribing.script.extend(["hang"])
    async with serve(create_app(settings, database_url=database_url)) as client:
        task_id, marker = await Uploader(client).create()
        row = await wait_terminal(engine, task_id)

    assert row["status"] == "completed"
    assert len(fakes.transcribing.calls_for(marker)) == 2
    retry = next(e for e in await event_log(engine, task_id) if e["kind"] == "retry")
    assert "timed out after 0.3s" in retry["detail"]


async def test_a_400_fails_at_once_with_the_services_detail(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.preprocessing.detail = "Length not divisible by 4"
    fakes.preprocessing.script.extend([400])
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "failed"
    assert row["comment"] == (
        "preprocessing failed: the service answered HTTP 400: Length not divisible by 4"
    )
    assert len(fakes.preprocessing.calls_for(marker)) == 1
    assert fakes.transcribing.calls_for(marker) == []


async def test_an_unknown_text_fails_in_feedback(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.feedback.detail = "Text not found"
    fakes.feedback.script.extend([404])
    task_id, _ = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "failed"
    assert row["comment"] == "feedback failed: the service answered HTTP 404: Text not found"
    assert row["result"] is not None  # the transcription is kept


async def test_an_invalid_answer_is_permanent(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.feedback.script.extend(["bad-body"])
    task_id, marker = await uploader.create()

    row = await wait_terminal(engine, task_id)

    assert row["status"] == "failed"
    assert row["comment"] == "feedback failed: invalid response: no numeric 'accuracy'"
    assert len(fakes.feedback.calls_for(marker)) == 1


async def test_a_service_that_stays_down_fails_the_task_after_the_budget(
    fakes: FakeServices, engine: AsyncEngine, database_url: URL
) -> None:
    overrides = fakes.settings()
    overrides["service_transcribing"] = {"host": "127.0.0.1", "port": unused_port(), "timeout": 1}
    settings = pipeline_settings(fakes, **overrides)
    async with serve(create_app(settings, database_url=database_url)) as client:
        task_id, _ = await Uploader(client).create()
        row = await wait_terminal(engine, task_id)

    assert row["status"] == "failed"
    # The transport error's own text (it may name internal hosts) stays in the logs.
    assert row["comment"] == (
        "transcribing failed: the service could not be reached (after 4 attempts)"
    )
    assert len([e for e in await event_log(engine, task_id) if e["kind"] == "retry"]) == 3
