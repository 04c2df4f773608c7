"""Fairness between users, deleting a task mid-run, and the audio retention purge."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.pipeline import queue
from tests.conftest import make_settings, pipeline_settings, serve
from tests.fakes import FakeServices
from tests.pipeline.conftest import Uploader, task_row, wait_terminal
from tests.waiting import eventually


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, max_active_tasks_per_user=2)


async def test_one_users_backlog_does_not_starve_another(
    fakes: FakeServices, engine: AsyncEngine, database_url: URL
) -> None:
    heavy, light = uuid.uuid4(), uuid.uuid4()
    queue_only = make_settings(worker_concurrency=0)
    async with serve(create_app(queue_only, database_url=database_url)) as client:
        uploader = Uploader(client)
        for _ in range(100):
            await uploader.create(heavy)
        light_task, _ = await uploader.create(light)

    fakes.preprocessing.latency = 0.3
    workers = pipeline_settings(fakes, worker_concurrency=4, max_active_tasks_per_user=2)
    async with serve(create_app(workers, database_url=database_url)):

        async def light_started() -> bool:
            row = await task_row(engine, light_task)
            return bool(row and row["status"] != "created")

        await eventually(light_started, within=5, message="the second user's task to start")

    async with engine.connect() as connection:
        heavy_before_light = await connection.scalar(
            text(
                """
                SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id
                WHERE t.user_id = :heavy AND e.status = 'started' AND e.created_at <= (
                    SELECT created_at FROM task_events
                    WHERE task_id = :light AND status = 'started')
                """
            ),
            {"heavy": heavy, "light": light_task},
        )
    # One claim round: the heavy user's cap of 2, then the light user's task.
    assert heavy_before_light <= 2


async def test_deleting_a_task_mid_run_stops_the_worker_without_resurrecting_it(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    fakes.transcribing.latency = 1.5
    user_id = uuid.uuid4()
    task_id, marker = await uploader.create(user_id)
    await eventually(
        lambda: bool(fakes.transcribing.calls_for(marker)),
        message="the transcriber to be called",
    )

    response = await client.delete(f"/tasks/{task_id}", headers={"X-User-Id": str(user_id)})

    assert response.status_code == 204
    assert await task_row(engine, task_id) is None
    await assert_nothing_written_back(engine, fakes, task_id, marker)
    async with engine.connect() as connection:
        history = await connection.scalar(
            text("SELECT count(*) FROM task_events WHERE task_id = :id"), {"id": task_id}
        )
    assert history == 0


async def test_erasing_a_user_mid_run_leaves_nothing_for_the_worker_to_write_back(
    uploader: Uploader, fakes: FakeServices, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    fakes.transcribing.latency = 1.5
    user_id = uuid.uuid4()
    task_id, marker = await uploader.create(user_id)
    await eventually(
        lambda: bool(fakes.transcribing.calls_for(marker)),
        message="the transcriber to be called",
    )

    assert (await client.delete(f"/users/{user_id}")).status_code == 204
    await assert_nothing_written_back(engine, fakes, task_id, marker)


async def test_every_stage_write_of_an_erased_users_task_is_a_no_op(
    engine: AsyncEngine, database_url: URL, clean_database: None
) -> None:
    owner, user_id = f"test-owner-{uuid.uuid4().hex[:6]}", uuid.uuid4()
    async with serve(create_app(make_settings(), database_url=database_url)) as client:
        task_id, _ = await Uploader(client).create(user_id)
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", owner)
            try:
                claimed = await queue.claim_next_task(
                    driver, owner=owner, lease_seconds=30, per_user=2, max_claims=5
                )
                assert claimed is not None
                assert str(claimed.id) == task_id

                assert (await client.delete(f"/users/{user_id}")).status_code == 204

                writes = [
                    queue.store_preprocessed_audio(driver, claimed.id, owner=owner, wav=b"RIFF"),
                    queue.store_transcription(driver, claimed.id, owner=owner, transcription="x"),
                    queue.complete_task(
                        driver, claimed.id, owner=owner, accuracy=50.0, mistakes=[]
                    ),
                    queue.fail_task(driver, claimed.id, owner=owner, comment="late"),
                    queue.release_for_retry(
                        driver,
                        claimed.id,
                        owner=owner,
                        stage="transcribing",
                        attempts=1,
                        delay_seconds=1,
                        reason="late",
                    ),
                    queue.renew_lease(driver, claimed.id, owner=owner, lease_seconds=30),
                ]
                for write in writes:
                    assert await write is False
            finally:
                await driver.execute("SELECT pg_advisory_unlock_all()")
    async with engine.connect() as connection:
        left = await connection.scalar(
            text(
                """
                SELECT (SELECT count(*) FROM tasks WHERE id = :id)
                     + (SELECT count(*) FROM task_audio WHERE task_id = :id)
                     + (SELECT count(*) FROM task_events WHERE task_id = :id)
                     + (SELECT count(*) FROM webhook_deliveries WHERE task_id = :id)
                """
            ),
            {"id": task_id},
        )
    assert left == 0


async def test_delete_of_another_users_task_is_not_found(
    uploader: Uploader, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id, _ = await uploader.create(uuid.uuid4())

    foreign = await client.delete(f"/tasks/{task_id}", headers={"X-User-Id": str(uuid.uuid4())})

    assert foreign.status_code == 404
    assert foreign.json() == {"detail": "Task not found."}
    assert await task_row(engine, task_id) is not None


async def test_retention_purges_audio_of_old_finished_tasks_only(
    fakes: FakeServices, engine: AsyncEngine, database_url: URL
) -> None:
    # 1.8 s of retention, so the purge loop runs every 0.45 s.
    settings = pipeline_settings(fakes, audio_retention_hours=0.0005)
    async with serve(create_app(settings, database_url=database_url)) as client:
        uploader = Uploader(client)
        finished_id, _ = await uploader.create()
        await wait_terminal(engine, finished_id)
        fakes.preprocessing.latency = 30  # keeps the second task unfinished
        running_id, _ = await uploader.create()

        async def audio_purged() -> bool:
            return await audio_count(engine, finished_id) == 0

        await eventually(audio_purged, within=15, message="the finished task's audio to go")
        assert await audio_count(engine, running_id) == 1

    finished = await task_row(engine, finished_id)
    assert finished is not None
    assert finished["status"] == "completed"
    assert finished["accuracy"] is not None  # results stay


def test_audio_is_kept_seven_days_after_the_task_ends_by_default() -> None:
    assert make_settings().audio_retention_hours == 168


async def test_retention_zero_deletes_the_audio_as_the_task_ends(
    fakes: FakeServices, engine: AsyncEngine, database_url: URL
) -> None:
    settings = pipeline_settings(fakes, audio_retention_hours=0)
    user_id = uuid.uuid4()
    headers = {"X-User-Id": str(user_id)}
    async with serve(create_app(settings, database_url=database_url)) as client:
        uploader = Uploader(client)
        completed_id, _ = await uploader.create(user_id)
        await wait_terminal(engine, completed_id)
        # In the statement that completed it: no wait for the purge.
        assert await audio_count(engine, completed_id) == 0

        fakes.feedback.always = "bad-body"  # a permanent failure ends the task too
        failed_id, _ = await uploader.create(user_id)
        assert (await wait_terminal(engine, failed_id))["status"] == "failed"
        assert await audio_count(engine, failed_id) == 0

        fakes.feedback.always = None
        fakes.preprocessing.latency = 30  # keeps this one in a stage
        running_id, marker = await uploader.create(user_id)
        await eventually(
            lambda: bool(fakes.preprocessing.calls_for(marker)), message="preprocessing to start"
        )
        async with engine.connect() as connection:  # the purge at 0 spares it too
            raw = (await connection.get_raw_connection()).driver_connection
            await queue.purge_expired_audio(raw, older_than_hours=0)
        assert await audio_count(engine, running_id) == 1

        # The results stay, and every read still answers without the audio.
        detail = await client.get(f"/tasks/{completed_id}", headers=headers)
        assert detail.status_code == 200
        assert detail.json()["status"] == "completed"
        assert detail.json()["accuracy"] is not None
        legacy = await client.post(f"/{completed_id}", json={"user_id": str(user_id)})
        assert legacy.status_code == 200
        assert legacy.json()["status"] == "completed"
        everything = {completed_id, failed_id, running_id}
        listed = await client.get("/tasks", headers=headers)
        assert {task["id"] for task in listed.json()["items"]} == everything
        legacy_list = await client.post("/", json={"user_id": str(user_id)})
        assert {task["id"] for task in legacy_list.json()} == everything
    async with engine.connect() as connection:
        history = await connection.execute(
            text("SELECT kind, status FROM task_events WHERE task_id = :id ORDER BY seq"),
            {"id": completed_id},
        )
    # The whole history stays.
    assert [tuple(row) for row in history] == [
        ("status", "created"),
        ("status", "started"),
        ("status", "preprocessing"),
        ("status", "transcribing"),
        ("status", "evaluating"),
        ("status", "completed"),
    ]


async def audio_count(engine: AsyncEngine, task_id: str) -> int:
    async with engine.connect() as connection:
        value = await connection.scalar(
            text("SELECT count(*) FROM task_audio WHERE task_id = :id"), {"id": task_id}
        )
    return int(value or 0)


async def assert_nothing_written_back(
    engine: AsyncEngine, fakes: FakeServices, task_id: str, marker: str
) -> None:
    """Once the running transcription of a deleted task ends, its worker lets go and
    writes nothing back: no row, no feedback call, no audio."""
    await eventually(
        lambda: fakes.transcribing.calls_for(marker)[0].finished is not None,
        message="the transcriber call to end",
    )

    async def worker_idle() -> bool:
        async with engine.connect() as connection:
            held = await connection.scalar(
                text("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL")
            )
        return bool(held == 0)

    await eventually(worker_idle, message="the worker to let go")
    assert await task_row(engine, task_id) is None
    assert fakes.feedback.calls_for(marker) == []
    assert await audio_count(engine, task_id) == 0
