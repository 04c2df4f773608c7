"""Crashes, replicas, database restarts and SIGTERM, with real processes and sockets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from tests.conftest import pipeline_settings, serve
from tests.fakes import FakeServices, audio_for, new_marker
from tests.pipeline.conftest import Uploader, task_row, wait_terminal
from tests.postgres import SessionPostgres
from tests.process import ServiceProcess
from tests.waiting import eventually

pytestmark = pytest.mark.slow

ProcessFactory = Callable[..., ServiceProcess]


@pytest.fixture
def service_process(
    postgres: SessionPostgres,
    database_url: URL,
    fakes: FakeServices,
    tmp_path: Path,
    clean_database: None,
) -> ProcessFactory:
    def make(name: str = "service", **overrides: str) -> ServiceProcess:
        environment = {
            **postgres.environment(database_url),
            **fakes.environment(),
            "MANAGER_DEBUG_MODE": "false",
            "MANAGER_WORKER_CONCURRENCY": "4",
            "MANAGER_WORKER_LEASE_SECONDS": "3",
            "MANAGER_WORKER_POLL_SECONDS": "1",
            "MANAGER_PIPELINE_BACKOFF_BASE_SECONDS": "0.05",
            "MANAGER_PIPELINE_BACKOFF_MAX_SECONDS": "0.2",
            "MANAGER_MAX_ACTIVE_TASKS_PER_USER": "100",
            "MANAGER_SHUTDOWN_GRACE_SECONDS": "5",
            **overrides,
        }
        return ServiceProcess(environment, tmp_path / f"{name}.log")

    return make


def test_a_service_that_never_answers_is_stopped_not_leaked(
    service_process: ProcessFactory,
) -> None:
    # It listens on another loopback address, so its /health on 127.0.0.1 never answers.
    service = service_process("unreachable", MANAGER_HOST="127.0.0.2")
    service.ready_within = 5

    with pytest.raises(AssertionError, match="to answer"), service:
        pass

    assert service.process is not None
    assert service.process.poll() is not None, "the process outlived its failed start"


async def upload(base_url: str, marker: str, user_id: uuid.UUID | None = None) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(
            "/tasks",
            data={"title": "crash test", "text_id": str(uuid.uuid4())},
            files={"file": ("a.pcm", audio_for(marker), "application/octet-stream")},
            headers={"X-User-Id": str(user_id or uuid.uuid4())},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_task_survives_sigkill_and_resumes_after_its_last_stored_stage(
    service_process: ProcessFactory, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.transcribing.latency = 60
    marker = new_marker()
    with service_process("first") as first:
        task_id = await upload(first.base_url, marker)
        await eventually(
            lambda: bool(fakes.transcribing.calls_for(marker)),
            message="the transcriber to be called",
        )
        first.kill()

    fakes.transcribing.latency = 0
    with service_process("second"):
        row = await wait_terminal(engine, task_id, within=30)

    assert row["status"] == "completed", row["comment"]
    assert len(fakes.preprocessing.calls_for(marker)) == 1
    assert len(fakes.transcribing.calls_for(marker)) == 2  # the killed call, then the resumed one
    assert len(fakes.feedback.calls_for(marker)) == 1


async def test_two_processes_share_200_tasks_without_overlap(
    service_process: ProcessFactory, fakes: FakeServices, engine: AsyncEngine
) -> None:
    for stage in fakes.all():
        stage.latency = 0.01
    markers = [new_marker() for _ in range(200)]
    with service_process("a") as a, service_process("b") as b:
        targets = [a.base_url, b.base_url]
        semaphore = asyncio.Semaphore(16)

        async def create(index: int, marker: str) -> str:
            async with semaphore:
                return await upload(targets[index % 2], marker)

        task_ids = await asyncio.gather(*(create(i, m) for i, m in enumerate(markers)))

        async def all_finished() -> bool:
            async with engine.connect() as connection:
                left = await connection.scalar(
                    text("SELECT count(*) FROM tasks WHERE status NOT IN ('completed', 'failed')")
                )
            return bool(left == 0)

        await eventually(all_finished, within=120, message="all 200 tasks to finish")

    async with engine.connect() as connection:
        statuses: dict[str, int] = dict(
            (
                await connection.execute(text("SELECT status, count(*) FROM tasks GROUP BY status"))
            ).all()
        )
    assert statuses == {"completed": 200}
    assert len(task_ids) == 200
    for stage in fakes.all():
        assert stage.overlaps == [], f"{stage.name} was called twice at once for a task"
        for marker in markers:
            assert len(stage.calls_for(marker)) == 1, f"{stage.name} called more than once"


async def test_the_service_rides_out_a_database_restart(
    postgres: SessionPostgres, fakes: FakeServices, engine: AsyncEngine, database_url: URL
) -> None:
    fakes.transcribing.latency = 0.5
    settings = pipeline_settings(fakes, worker_concurrency=4, max_active_tasks_per_user=100)
    async with serve(create_app(settings, database_url=database_url)) as client:
        uploader = Uploader(client)
        task_ids = [(await uploader.create())[0] for _ in range(12)]
        await eventually(
            lambda: fakes.transcribing.count() >= 2,
            message="work to be under way",
        )

        await asyncio.to_thread(postgres.restart)

        # A request on a connection the restart cut is a 503 to retry, never a 500.
        for _ in range(3):
            probe = await client.get("/tasks", headers={"X-User-Id": str(uuid.uuid4())})
            assert probe.status_code in (200, 503), probe.text
        for task_id in task_ids:
            row = await wait_terminal(engine, task_id, within=60)
            assert row["status"] == "completed", row["comment"]
        # And the API works again without a restart of the service.
        task_id, _ = await uploader.create()
        assert (await wait_terminal(engine, task_id, within=30))["status"] == "completed"


async def test_sigterm_finishes_in_flight_calls_and_hands_tasks_back(
    service_process: ProcessFactory, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.transcribing.latency = 1.0
    markers = [new_marker() for _ in range(6)]
    with service_process("stopping", MANAGER_SHUTDOWN_GRACE_SECONDS="5") as first:
        task_ids = [await upload(first.base_url, marker) for marker in markers]
        await eventually(
            lambda: fakes.transcribing.count() >= 2,
            message="transcriptions to be in flight",
        )
        first.terminate(within=15)

    async with engine.connect() as connection:
        held = await connection.scalar(
            text("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL")
        )
    assert held == 0, "leases must be handed back at shutdown"
    for marker in markers:
        for call in fakes.transcribing.calls_for(marker):
            assert call.finished is not None

    fakes.transcribing.latency = 0
    with service_process("after"):
        for task_id in task_ids:
            row = await wait_terminal(engine, task_id, within=30)
            assert row["status"] == "completed", row["comment"]
    for marker in markers:
        assert len(fakes.preprocessing.calls_for(marker)) == 1
        assert len(fakes.transcribing.calls_for(marker)) == 1  # nothing in flight was cut off
    assert await task_row(engine, task_ids[0]) is not None


async def test_a_killed_process_s_task_is_taken_over_long_before_its_lease_ends(
    service_process: ProcessFactory, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.preprocessing.latency = 120
    marker, other = new_marker(), new_marker()
    long_lease = {
        "MANAGER_WORKER_LEASE_SECONDS": "60",
        "MANAGER_SERVICE_PREPROCESSING_TIMEOUT": "300",  # the held call must not time out
    }
    with service_process("first", **long_lease) as first:
        task_id = await upload(first.base_url, marker)
        await eventually(
            lambda: bool(fakes.preprocessing.calls_for(marker)),
            message="the preprocessor to be called",
        )
        holder = (await task_row(engine, task_id) or {})["lease_owner"]
        with service_process("second", **long_lease) as second:
            # The second process claims and finishes work of its own meanwhile, and
            # leaves the task of the live first process alone.
            fakes.preprocessing.latency = 0
            other_id = await upload(second.base_url, other)
            assert (await wait_terminal(engine, other_id, within=30))["status"] == "completed"
            row = await task_row(engine, task_id)
            assert row is not None
            assert (row["lease_owner"], row["status"]) == (holder, "preprocessing")

            first.kill()
            # Half the lease: finishing within it means the task was taken over before
            # the lease ran out.
            row = await wait_terminal(engine, task_id, within=30)

    assert row["status"] == "completed", row["comment"]
    assert len(fakes.preprocessing.calls_for(marker)) == 2  # the killed call, then the new one
