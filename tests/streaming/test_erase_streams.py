"""Erasing a user ends the streams that follow their tasks, and only those."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.fakes import FakeServices
from tests.live import LiveService, collect, sse_events
from tests.waiting import eventually


async def test_erasing_a_user_ends_their_open_streams(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 30  # the tasks stay unfinished while they are followed
    user_id, other = uuid.uuid4(), uuid.uuid4()
    mine, _ = await live.create(user_id)
    theirs, _ = await live.create(other)

    async with (
        sse_events(
            live.base_url, "GET", f"/tasks/{mine}/events", params={"user_id": str(user_id)}
        ) as (_, events),
        sse_events(
            live.base_url, "POST", f"/{mine}/stream", json_body={"user_id": str(user_id)}
        ) as (_, legacy_events),
        sse_events(
            live.base_url, "GET", f"/tasks/{theirs}/events", params={"user_id": str(other)}
        ) as (_, other_events),
    ):
        for stream in (events, legacy_events, other_events):
            assert len(await collect(stream, limit=1)) == 1  # the current state
        await eventually(lambda: live.follower_count == 3, message="three followers")

        async with httpx.AsyncClient(base_url=live.base_url) as client:
            assert (await client.delete(f"/users/{user_id}")).status_code == 204

        # Both streams of the erased user's task end, with nothing more sent.
        assert await asyncio.wait_for(collect(events), timeout=20) == []
        assert await asyncio.wait_for(collect(legacy_events), timeout=20) == []
        await eventually(lambda: live.follower_count == 1, message="one follower left")
