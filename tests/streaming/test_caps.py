"""Follower caps: one user cannot take every stream of a process."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.config import Settings
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices
from tests.live import LiveService, collect, sse_events
from tests.waiting import eventually


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, sse_max_followers=3, sse_max_followers_per_user=2)


async def test_a_user_over_the_per_user_cap_gets_429_and_others_still_follow(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 30
    greedy, other = uuid.uuid4(), uuid.uuid4()
    greedy_task, _ = await live.create(greedy)
    other_task, _ = await live.create(other)
    greedy_path, other_path = f"/tasks/{greedy_task}/events", f"/tasks/{other_task}/events"
    greedy_params, other_params = {"user_id": str(greedy)}, {"user_id": str(other)}

    async with (
        sse_events(live.base_url, "GET", greedy_path, params=greedy_params) as (_, first),
        sse_events(live.base_url, "GET", greedy_path, params=greedy_params) as (_, second),
    ):
        await collect(first, limit=1)
        await collect(second, limit=1)
        async with httpx.AsyncClient(base_url=live.base_url) as client:
            over = await client.get(greedy_path, params=greedy_params)
            legacy_over = await client.post(f"/{greedy_task}/stream", json=greedy_params)
        assert over.status_code == legacy_over.status_code == 429
        assert over.headers["retry-after"] == legacy_over.headers["retry-after"] == "5"
        assert "streams open" in over.json()["detail"]
        assert live.follower_count == 2

        # Another user is not affected by the greedy one ...
        async with sse_events(live.base_url, "GET", other_path, params=other_params) as (_, mine):
            assert len(await collect(mine, limit=1)) == 1
            # ... until the process as a whole is full: that is still 503.
            async with httpx.AsyncClient(base_url=live.base_url) as client:
                full = await client.get(other_path, params=other_params)
            assert full.status_code == 503

    # Closed streams give their slots back to the user.
    await eventually(
        lambda: live.follower_count == 0,
        within=10,
        message="the followers to be released",
    )
    async with sse_events(live.base_url, "GET", greedy_path, params=greedy_params) as (_, again):
        assert len(await collect(again, limit=1)) == 1
