"""Resuming a stream: whatever id a client resumes from, a finished task's stream ends."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.live import LiveService, collect, sse_events, statuses
from tests.pipeline.conftest import event_log, wait_terminal

FULL_RUN = ["created", "started", "preprocessing", "transcribing", "evaluating", "completed"]


async def _completed_task(live: LiveService, engine: AsyncEngine) -> tuple[uuid.UUID, str, int]:
    """A finished task, its owner and the id of its last (terminal) event."""
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)
    await wait_terminal(engine, task_id)
    last = max(row["seq"] for row in await event_log(engine, task_id) if row["kind"] == "status")
    return user_id, task_id, last


@pytest.mark.parametrize("via", ["header", "query"])
async def test_resuming_at_the_terminal_event_ends_at_once_with_204(
    live: LiveService, engine: AsyncEngine, via: str
) -> None:
    user_id, task_id, last = await _completed_task(live, engine)
    params: dict[str, str | int] = {"user_id": str(user_id)}
    headers = {}
    if via == "header":
        headers["Last-Event-ID"] = str(last)
    else:
        params["last_event_id"] = last

    async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as client:
        # An open-ended stream would make this wait out the client's read timeout.
        response = await asyncio.wait_for(
            client.get(f"/tasks/{task_id}/events", params=params, headers=headers), timeout=5
        )

    # 204 is how a server tells EventSource to stop reconnecting: it has seen everything.
    assert response.status_code == 204
    assert response.content == b""
    assert live.follower_count == 0


@pytest.mark.parametrize("via", ["header", "query"])
async def test_resuming_past_the_last_event_replays_from_the_start_and_ends(
    live: LiveService, engine: AsyncEngine, via: str
) -> None:
    user_id, task_id, last = await _completed_task(live, engine)
    params: dict[str, str | int] = {"user_id": str(user_id)}
    headers = {}
    for beyond in (last + 1, 2147483647):
        if via == "header":
            headers["Last-Event-ID"] = str(beyond)
        else:
            params["last_event_id"] = beyond
        async with sse_events(
            live.base_url, "GET", f"/tasks/{task_id}/events", params=params, headers=headers
        ) as (_, events):
            received = await asyncio.wait_for(collect(events), timeout=5)
        # An id this task never issued: the client's view is unknown, so it gets everything.
        assert statuses(received) == FULL_RUN
    assert live.follower_count == 0


@pytest.mark.parametrize("bad", ["2147483648", "99999999999999999999", "-1", "abc", "1.5"])
async def test_an_invalid_last_event_id_is_422_never_500(
    live: LiveService, engine: AsyncEngine, bad: str
) -> None:
    user_id, task_id, _ = await _completed_task(live, engine)
    path = f"/tasks/{task_id}/events"
    async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as client:
        by_header = await client.get(
            path, params={"user_id": str(user_id)}, headers={"Last-Event-ID": bad}
        )
        by_query = await client.get(path, params={"user_id": str(user_id), "last_event_id": bad})
    for response in (by_header, by_query):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/json"
    assert live.follower_count == 0


async def test_the_legacy_stream_of_a_finished_task_ends_whatever_it_is_sent(
    live: LiveService, engine: AsyncEngine
) -> None:
    """The legacy POST has no resume: a stray Last-Event-ID header changes nothing."""
    user_id, task_id, last = await _completed_task(live, engine)
    for header in (str(last), "2147483648", "abc"):
        async with sse_events(
            live.base_url, "POST", f"/{task_id}/stream",
            json_body={"user_id": str(user_id)}, headers={"Last-Event-ID": header},
        ) as (response, events):  # fmt: skip
            assert response.status_code == 200
            received = await asyncio.wait_for(collect(events), timeout=5)
        assert [json.loads(event.data)["status"] for event in received] == ["completed"]
    assert live.follower_count == 0
