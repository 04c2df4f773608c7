"""Failover on a real primary with a synchronous standby: nothing lost, nothing run twice.

Two service processes work through 40 tasks with a host list naming both servers; the
primary is killed mid-run (`pg_ctl -m immediate stop`) and the standby promoted. Every
task must complete, no stage may run twice at once for one task (the fakes count calls in
flight per task), and every open stream must end at `completed`, resumed where needed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.db.url import asyncpg_dsn
from tests.fakes import FakeServices, audio_for, new_marker
from tests.ha.cluster import ReplicatedCluster, available, replicated_cluster
from tests.process import ServiceProcess
from tests.waiting import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="needs Debian's PostgreSQL 15 binaries"),
]

TASKS = 40
STREAMS = 10


def _dsn(cluster: ReplicatedCluster) -> str:
    hosts = f"127.0.0.1:{cluster.primary.port},127.0.0.1:{cluster.standby.port}"
    return f"postgresql://postgres@/tasks?host={hosts}&target_session_attrs=read-write"


async def _fetch(cluster: ReplicatedCluster, sql: str) -> list[Any]:
    connection = await asyncpg.connect(_dsn(cluster), timeout=5)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def _process(cluster: ReplicatedCluster, fakes: FakeServices, log: Path) -> ServiceProcess:
    return ServiceProcess(
        {
            **cluster.environment("tasks"),
            **fakes.environment(),
            "MANAGER_DEBUG_MODE": "false",
            "MANAGER_WORKER_CONCURRENCY": "4",
            "MANAGER_WORKER_LEASE_SECONDS": "6",
            "MANAGER_WORKER_POLL_SECONDS": "1",
            "MANAGER_PIPELINE_BACKOFF_BASE_SECONDS": "0.05",
            "MANAGER_PIPELINE_BACKOFF_MAX_SECONDS": "0.5",
            "MANAGER_MAX_ACTIVE_TASKS_PER_USER": "100",
        },
        log,
    )


async def _upload(base_url: str, marker: str, user: uuid.UUID) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(
            "/tasks",
            data={"title": "failover", "text_id": str(uuid.uuid4())},
            files={"file": ("a.pcm", audio_for(marker), "application/octet-stream")},
            headers={"X-User-Id": str(user)},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _follow(base_urls: list[str], task_id: str, user: uuid.UUID) -> tuple[str, int]:
    """Follow a task's stream to its end, resuming (Last-Event-ID) after a cut.

    Returns the last event and how many times the stream was resumed."""
    last_id: str | None = None
    resumed = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        headers = {"X-User-Id": str(user), "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        event = ""
        try:
            async with (
                httpx.AsyncClient(base_url=base_urls[resumed % 2], timeout=30) as client,
                client.stream("GET", f"/tasks/{task_id}/events", headers=headers) as response,
            ):
                if response.status_code != 200:
                    raise httpx.HTTPError(f"status {response.status_code}")
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        last_id = line[3:].strip()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                        if event in ("completed", "failed"):
                            return event, resumed
        except httpx.HTTPError:
            pass
        resumed += 1
        await asyncio.sleep(0.2)  # pacing between reconnections, not synchronisation
    return "timeout", resumed


async def test_a_failover_loses_no_task_and_runs_no_stage_twice(
    fakes: FakeServices, tmp_path: Path
) -> None:
    for stage in fakes.all():
        stage.latency = 0.3
    with replicated_cluster() as cluster:
        admin = await asyncpg.connect(asyncpg_dsn(cluster.primary.url()))
        await admin.execute("CREATE DATABASE tasks")
        await admin.close()
        a = _process(cluster, fakes, tmp_path / "a.log")
        b = _process(cluster, fakes, tmp_path / "b.log")
        with a, b:
            urls = [a.base_url, b.base_url]
            users = [uuid.uuid4() for _ in range(TASKS)]
            markers = [new_marker() for _ in range(TASKS)]
            ids = await asyncio.gather(
                *(_upload(urls[i % 2], markers[i], users[i]) for i in range(TASKS))
            )
            streams = [asyncio.create_task(_follow(urls, ids[i], users[i])) for i in range(STREAMS)]

            async def some_done() -> bool:
                rows = await _fetch(
                    cluster, "SELECT count(*) AS n FROM tasks WHERE status = 'completed'"
                )
                return int(rows[0]["n"]) >= 5

            await eventually(some_done, within=60, message="some tasks to complete")
            cluster.kill_primary()
            cluster.promote_standby()
            promoted = time.monotonic()

            async def first_after() -> float | None:
                try:
                    rows = await _fetch(
                        cluster,
                        "SELECT count(*) AS n FROM tasks WHERE status = 'completed' "
                        "AND completed_at > now() - make_interval(secs => "
                        f"{time.monotonic() - promoted})",
                    )
                except (OSError, asyncpg.PostgresError):
                    return None
                return time.monotonic() - promoted if rows[0]["n"] > 0 else None

            until_first = await eventually(first_after, within=90, message="a completion")

            async def all_done() -> list[Any] | None:
                rows = await _fetch(cluster, "SELECT status FROM tasks")
                return rows if sum(r["status"] == "completed" for r in rows) == TASKS else None

            await eventually(all_done, within=120, message="every task to complete")
            ends = await asyncio.gather(*streams)

    overlaps = {stage.name: stage.overlaps for stage in fakes.all()}
    print(f"\nfailover: first completion {until_first:.2f} s after the promotion; "
          f"streams resumed {sum(r for _, r in ends)} times; overlaps {overlaps}")  # fmt: skip
    assert all(not found for found in overlaps.values()), overlaps
    assert [event for event, _ in ends] == ["completed"] * STREAMS
