"""Stream limits and keep-alive: a small follower cap and a fast heartbeat."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.config import Settings
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices
from tests.live import LiveService, collect, sse_events


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, sse_heartbeat_seconds=0.2, sse_max_followers=2)


async def test_heartbeat_comments_keep_an_idle_stream_alive(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 30
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as client,
        client.stream("GET", f"/tasks/{task_id}/events", params={"user_id": str(user_id)}) as r,
    ):
        async for line in r.aiter_lines():
            lines.append(line)
            if line.startswith(":"):
                break
    assert any(line.startswith(": ping") for line in lines)


async def test_followers_beyond_the_limit_get_503_with_retry_after(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 30
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)
    params = {"user_id": str(user_id)}
    path = f"/tasks/{task_id}/events"

    async with (
        sse_events(live.base_url, "GET", path, params=params) as (_, first),
        sse_events(live.base_url, "GET", path, params=params) as (_, second),
    ):
        await collect(first, limit=1)
        await collect(second, limit=1)
        async with httpx.AsyncClient(base_url=live.base_url) as client:
            third = await client.get(path, params=params)
    assert third.status_code == 503
    assert third.headers["retry-after"] == "5"
    assert "try again" in third.json()["detail"]
