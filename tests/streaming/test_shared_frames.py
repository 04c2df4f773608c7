"""Followers of one task share each event's encoding and the hub's one heartbeat, in both
stream formats."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from app.config import Settings
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices
from tests.live import LiveService, collect, sse_events, statuses
from tests.waiting import eventually

FULL_RUN = ["created", "started", "preprocessing", "transcribing", "evaluating", "completed"]


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, sse_heartbeat_seconds=0.2)


async def test_resource_and_legacy_followers_of_one_task_each_get_their_format(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 1.0
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)
    path = f"/tasks/{task_id}/events"
    params = {"user_id": str(user_id), "last_event_id": 0}

    async with (
        sse_events(live.base_url, "GET", path, params=params) as (_, first),
        sse_events(live.base_url, "GET", path, params=params) as (_, second),
        sse_events(
            live.base_url, "POST", f"/{task_id}/stream", json_body={"user_id": str(user_id)}
        ) as (_, legacy),
    ):
        await eventually(lambda: live.follower_count == 3, message="three followers")
        received = await asyncio.gather(collect(first), collect(second), collect(legacy))

    resource_a, resource_b, legacy_events = received
    assert statuses(resource_a) == FULL_RUN
    # The same frames, byte for byte, for every resource follower.
    assert [(e.id, e.event, e.data, e.retry) for e in resource_a] == [
        (e.id, e.event, e.data, e.retry) for e in resource_b
    ]
    for event in resource_a:
        payload = json.loads(event.data)
        assert payload["status"] == event.event
        assert payload["seq"] == int(event.id)
    payloads = [json.loads(event.data) for event in legacy_events]
    for event, payload in zip(legacy_events, payloads, strict=True):
        assert set(payload) == {"event", "task_id", "status", "retry"}
        assert event.id == ""  # only data: lines
        assert event.event == "message"
    seen = [payload["status"] for payload in payloads]
    assert seen == FULL_RUN[FULL_RUN.index(seen[0]) :]
    await eventually(lambda: live.follower_count == 0, message="the followers to be released")


async def _first_comment(client: httpx.AsyncClient, request: httpx.Request) -> str:
    response = await client.send(request, stream=True)
    try:
        async for line in response.aiter_lines():
            if line.startswith(":"):
                return line
    finally:
        await response.aclose()
    raise AssertionError("the stream ended without a heartbeat")


async def test_the_hub_heartbeat_reaches_idle_streams_of_both_formats(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 30
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as client:
        resource = client.build_request(
            "GET", f"/tasks/{task_id}/events", params={"user_id": str(user_id)}
        )
        legacy = client.build_request("POST", f"/{task_id}/stream", json={"user_id": str(user_id)})
        comments = await asyncio.gather(
            _first_comment(client, resource), _first_comment(client, legacy)
        )
    assert all(comment.startswith(": ping") for comment in comments)
