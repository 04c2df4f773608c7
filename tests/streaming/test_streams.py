"""Following a task's transitions as they are committed: both stream routes, resume,
heartbeat, cleanup, limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx
from httpx_sse import ServerSentEvent
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes import FakeServices
from tests.live import LiveService, collect, sse_events, statuses
from tests.pipeline.conftest import wait_terminal
from tests.waiting import eventually

FULL_RUN = ["created", "started", "preprocessing", "transcribing", "evaluating", "completed"]


async def test_the_get_stream_shows_a_whole_run_and_ends(live: LiveService) -> None:
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    async with sse_events(
        live.base_url, "GET", f"/tasks/{task_id}/events",
        params={"user_id": str(user_id), "last_event_id": 0},
    ) as (response, events):  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        received = await collect(events)

    assert statuses(received) == FULL_RUN
    assert [event.event for event in received] == FULL_RUN
    assert [int(event.id) for event in received] == sorted(int(event.id) for event in received)
    assert received[0].retry == 15000
    last = json.loads(received[-1].data)
    assert last["event"] == "status_updated"
    assert last["task_id"] == task_id
    assert last["retry"] == 15000
    assert last["accuracy"] == 87.5
    assert "time" in last


async def test_the_first_event_is_the_current_state(live: LiveService, fakes: FakeServices) -> None:
    fakes.transcribing.latency = 1.0
    user_id = uuid.uuid4()
    task_id, marker = await live.create(user_id)
    await eventually(
        lambda: bool(fakes.transcribing.calls_for(marker)),
        message="transcription to start",
    )

    async with sse_events(
        live.base_url, "GET", f"/tasks/{task_id}/events", headers={"X-User-Id": str(user_id)}
    ) as (_, events):
        received = await collect(events)

    assert statuses(received) == ["transcribing", "evaluating", "completed"]


async def test_the_legacy_stream_sends_json_with_exactly_the_legacy_fields(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 0.5
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    async with sse_events(
        live.base_url, "POST", f"/{task_id}/stream", json_body={"user_id": str(user_id)}
    ) as (response, events):
        assert response.status_code == 200
        received = await collect(events)

    payloads = [json.loads(event.data) for event in received]
    for payload in payloads:
        assert set(payload) == {"event", "task_id", "status", "retry"}
        assert payload["event"] == "status_updated"
        assert payload["task_id"] == task_id
        assert payload["retry"] == 15000
    seen = [payload["status"] for payload in payloads]
    assert seen[-1] == "completed"
    assert seen == FULL_RUN[FULL_RUN.index(seen[0]) :]  # one per change, none repeated


async def test_resuming_with_last_event_id_loses_and_repeats_nothing(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.transcribing.latency = 1.0
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)
    params = {"user_id": str(user_id), "last_event_id": 0}

    async with sse_events(live.base_url, "GET", f"/tasks/{task_id}/events", params=params) as (
        _,
        events,
    ):
        first_part = await collect(events, limit=3)  # then the client drops the connection

    async with sse_events(
        live.base_url, "GET", f"/tasks/{task_id}/events",
        params={"user_id": str(user_id)}, headers={"Last-Event-ID": first_part[-1].id},
    ) as (_, events):  # fmt: skip
        second_part = await collect(events)

    assert statuses(first_part + second_part) == FULL_RUN
    ids = [event.id for event in first_part + second_part]
    assert len(ids) == len(set(ids))


async def test_a_follower_arriving_after_completion_gets_the_end_at_once(
    live: LiveService, engine: AsyncEngine
) -> None:
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)
    await wait_terminal(engine, task_id)

    for method, path, kwargs in (
        ("GET", f"/tasks/{task_id}/events", {"params": {"user_id": str(user_id)}}),
        ("POST", f"/{task_id}/stream", {"json_body": {"user_id": str(user_id)}}),
    ):
        async with sse_events(live.base_url, method, path, **kwargs) as (_, events):
            received = await asyncio.wait_for(collect(events), timeout=5)
        assert statuses(received) == ["completed"]


async def test_another_users_task_is_not_found_on_both_streams(live: LiveService) -> None:
    task_id, _ = await live.create(uuid.uuid4())
    stranger = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=live.base_url) as client:
        get = await client.get(f"/tasks/{task_id}/events", params={"user_id": stranger})
        post = await client.post(f"/{task_id}/stream", json={"user_id": stranger})
        missing = await client.get(f"/tasks/{uuid.uuid4()}/events", params={"user_id": stranger})
        anonymous = await client.get(f"/tasks/{task_id}/events")
    assert get.status_code == post.status_code == missing.status_code == 404
    assert get.json() == post.json() == missing.json() == {"detail": "Task not found."}
    assert anonymous.status_code == 401
    assert live.follower_count == 0


async def test_a_disconnecting_client_frees_its_follower_at_once(
    live: LiveService, fakes: FakeServices
) -> None:
    fakes.preprocessing.latency = 30
    user_id = uuid.uuid4()
    task_id, _ = await live.create(user_id)

    async with sse_events(
        live.base_url, "GET", f"/tasks/{task_id}/events", params={"user_id": str(user_id)}
    ) as (_, events):
        await collect(events, limit=1)
        assert live.follower_count == 1

    await eventually(
        lambda: live.follower_count == 0,
        within=5,
        message="the follower to be released",
    )


@contextlib.asynccontextmanager
async def following_mid_transcription(
    live: LiveService, fakes: FakeServices
) -> AsyncIterator[tuple[AsyncIterator[ServerSentEvent], list[ServerSentEvent]]]:
    """A task's stream held open while its (slowed) transcription runs, so whatever a test
    breaks then happens mid-run: yields the stream and the events read so far."""
    fakes.transcribing.latency = 1.5
    user_id = uuid.uuid4()
    task_id, marker = await live.create(user_id)
    async with sse_events(
        live.base_url, "GET", f"/tasks/{task_id}/events", params={"user_id": str(user_id)}
    ) as (_, events):
        first = await collect(events, limit=1)
        await eventually(
            lambda: bool(fakes.transcribing.calls_for(marker)),
            message="transcription to start",
        )
        yield events, first


async def test_the_listener_survives_pg_terminate_backend_without_losing_the_end(
    live: LiveService, fakes: FakeServices, engine: AsyncEngine
) -> None:
    listener = live.app.state.runtime.listener

    async with following_mid_transcription(live, fakes) as (events, first):
        old_pid = listener.backend_pid
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
        rest = await asyncio.wait_for(collect(events), timeout=20)

    assert statuses(first + rest)[-1] == "completed"
    assert listener.backend_pid != old_pid


async def test_the_hub_reads_again_after_its_pooled_connections_are_killed(
    live: LiveService, fakes: FakeServices, engine: AsyncEngine
) -> None:
    runtime = live.app.state.runtime

    async with following_mid_transcription(live, fakes) as (events, first):
        # Every pooled connection of the service (not its LISTEN one): the hub's next read
        # meets a dead connection, which must not go back to the pool and fail it again.
        async with engine.connect() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> :listener"
                ),
                {"name": runtime.settings.service_name, "listener": runtime.listener.backend_pid},
            )
        rest = await asyncio.wait_for(collect(events), timeout=30)

    assert statuses(first + rest)[-1] == "completed"
    assert statuses(first + rest) == FULL_RUN[FULL_RUN.index(statuses(first)[0]) :]
