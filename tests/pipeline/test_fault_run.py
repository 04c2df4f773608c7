"""The fault run: 200 tasks in flight through database restarts, a faulty transcriber and a
LISTEN connection that keeps being killed. Everything ends, and no worker is lost.

Run alone with `-s` to see its figures (wall time, restarts, retries, listener kills).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices, audio_for, new_marker
from tests.live import collect, live_server, sse_events
from tests.postgres import SessionPostgres
from tests.waiting import eventually

pytestmark = pytest.mark.slow

TASKS = 200
WORKERS = 8
RESTARTS = 5
STREAMS = 20
DIRTY = "\u0000\ud800"


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    overrides = fakes.settings()
    overrides["service_transcribing"] = {
        **overrides["service_transcribing"],
        "timeout": 0.5,
        "concurrency": 4,
    }
    return pipeline_settings(
        fakes,
        **overrides,
        worker_concurrency=WORKERS,
        max_active_tasks_per_user=TASKS,
        pipeline_max_attempts=12,
        pipeline_backoff_base_seconds=0.1,
        pipeline_backoff_max_seconds=1.0,
    )


@pytest.fixture
def served(settings: Settings, database_url: URL, clean_database: None) -> Iterator[Any]:
    app = create_app(settings, database_url=database_url)
    with live_server(app) as base_url:
        yield app, base_url


async def create(client: httpx.AsyncClient, user_id: uuid.UUID) -> str:
    response = await client.post(
        "/tasks",
        data={"title": "fault run", "text_id": str(uuid.uuid4())},
        files={"file": ("a.pcm", audio_for(new_marker()), "application/octet-stream")},
        headers={"X-User-Id": str(user_id)},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def follow(
    base_url: str, task_id: str, user_id: uuid.UUID, opened: asyncio.Event
) -> list[str]:
    """A stream until it ends; the statuses it showed."""
    async with sse_events(
        base_url, "GET", f"/tasks/{task_id}/events",
        params={"user_id": str(user_id), "last_event_id": 0},
    ) as (response, events):  # fmt: skip
        assert response.status_code == 200
        opened.set()
        received = await collect(events, limit=1000)
    return [json.loads(event.data)["status"] for event in received]


async def unfinished(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                text("SELECT count(*) FROM tasks WHERE status NOT IN ('completed', 'failed')")
            )
            or 0
        )


async def kill_listener(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        killed = await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE '%/listen' AND datname = current_database()"
            )
        )
        return len(killed.all())


async def test_200_tasks_survive_restarts_a_faulty_transcriber_and_a_killed_listener(
    served: Any, postgres: SessionPostgres, fakes: FakeServices, engine: AsyncEngine
) -> None:
    app, base_url = served
    rng = random.Random(7)
    transcriber = fakes.transcribing
    transcriber.hang_seconds = 1.0
    transcriber.detail = f"model overloaded {DIRTY}"
    transcriber.dirty_text = DIRTY
    outcomes: list[int | str] = [503, 503, "hang", "ok"]
    # The first 300 calls: mostly 503s (with a NUL in the detail) and timeouts.
    transcriber.script.extend(rng.choice(outcomes) for _ in range(300))
    fakes.preprocessing.latency = 0.02

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        users = [uuid.uuid4() for _ in range(TASKS)]
        semaphore = asyncio.Semaphore(16)

        async def create_one(user_id: uuid.UUID) -> str:
            async with semaphore:
                return await create(client, user_id)

        task_ids = await asyncio.gather(*(create_one(user) for user in users))
    opened = [asyncio.Event() for _ in range(STREAMS)]
    streams = [
        asyncio.create_task(follow(base_url, task_ids[i], users[i], opened[n]))
        for n, i in enumerate(range(0, TASKS, TASKS // STREAMS))
    ]
    # The faults hit open streams; opening one during a restart is a 503 to retry.
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), timeout=30)

    restarts = listener_kills = 0
    for _ in range(RESTARTS):
        await asyncio.sleep(rng.uniform(0.5, 1.5))  # let work get under way between faults
        await asyncio.to_thread(postgres.restart)
        restarts += 1
        for _ in range(2):
            await eventually(
                lambda: app.state.runtime.listener.connected.is_set(),
                within=30,
                message="the listener to reconnect",
            )
            listener_kills += await kill_listener(engine)
            await asyncio.sleep(0.3)

    async def all_terminal() -> bool:
        return await unfinished(engine) == 0

    await eventually(all_terminal, within=300, interval=0.5, message="all tasks to end")
    wall = time.monotonic() - started
    ended = await asyncio.wait_for(asyncio.gather(*streams), timeout=60)

    runtime = app.state.runtime
    async with engine.connect() as connection:
        grouped = await connection.execute(
            text("SELECT status, count(*) FROM tasks GROUP BY status")
        )
        statuses: dict[str, int] = {row[0]: row[1] for row in grouped}
        retries = await connection.scalar(
            text("SELECT count(*) FROM task_events WHERE kind = 'retry'")
        )
        failures = (
            (await connection.execute(text("SELECT comment FROM tasks WHERE status = 'failed'")))
            .scalars()
            .all()
        )
        dirty = await connection.scalar(
            text("SELECT count(*) FROM tasks WHERE result LIKE '%' || chr(65533) || '%'")
        )
    print(
        f"\nfault run: {TASKS} tasks in {wall:.1f}s; {restarts} PostgreSQL restarts, "
        f"{listener_kills} LISTEN backends killed, {retries} retries, "
        f"{transcriber.count()} transcriber calls; statuses {statuses}; "
        f"{dirty} cleaned transcriptions; workers {runtime.workers.running}/{WORKERS}; "
        f"failures: {sorted(set(failures))}"
    )
    assert sum(statuses.values()) == TASKS
    assert set(statuses) <= {"completed", "failed"}
    assert runtime.workers.running == WORKERS
    assert restarts == RESTARTS
    assert listener_kills >= RESTARTS
    assert all(stream[-1] in ("completed", "failed") for stream in ended), ended
