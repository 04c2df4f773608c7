"""Streams end at the stop signal, not after the server's drain period."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from sqlalchemy import URL

from tests.fakes import FakeServices
from tests.live import collect, sse_events, statuses
from tests.pipeline.conftest import Uploader
from tests.postgres import SessionPostgres
from tests.process import ServiceProcess

# uvicorn would hold an open stream this long after SIGTERM if nothing ended it.
GRACE_SECONDS = 600
# How long the test waits for the stream and the process to end: generous for a loaded
# machine, and still far short of the drain period above.
DEADLINE_SECONDS = 60


async def test_sigterm_ends_open_streams_at_once(
    postgres: SessionPostgres,
    database_url: URL,
    fakes: FakeServices,
    tmp_path: Path,
    clean_database: None,
) -> None:
    environment = {
        **postgres.environment(database_url),
        **fakes.environment(),
        "MANAGER_DEBUG_MODE": "false",
        "MANAGER_WORKER_CONCURRENCY": "0",  # the task stays `created`: only SIGTERM ends it
        "MANAGER_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    user_id = uuid.uuid4()
    with ServiceProcess(environment, tmp_path / "service.log") as service:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
            task_id, _ = await Uploader(client).create(user_id)
        async with sse_events(
            service.base_url, "GET", f"/tasks/{task_id}/events",
            params={"user_id": str(user_id)},
        ) as (_, events):  # fmt: skip
            first = await collect(events, limit=1)
            stopping = asyncio.create_task(
                asyncio.to_thread(service.terminate, within=DEADLINE_SECONDS)
            )
            # Returns when the server ends the stream.
            rest = await asyncio.wait_for(collect(events), timeout=DEADLINE_SECONDS)
        await stopping

    assert statuses(first) == ["created"]
    assert rest == []
