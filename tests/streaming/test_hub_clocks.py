"""The hub's shared clocks: one heartbeat for every idle stream, one send-timeout watch; and
the end of every stream at the server's stop signal."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.types import Message

from app.events.follower import Follower, StreamEnd
from app.events.hub import EventHub
from app.events.updates import TaskUpdate
from tests.streaming.memory_source import MemoryTransitions
from tests.waiting import eventually


def _hub(**options: Any) -> EventHub:
    return EventHub(MemoryTransitions(), max_followers=10, max_followers_per_user=10, **options)


async def _items(follower: Follower) -> list[object]:
    items: list[object] = []
    while follower.queue:
        items.append(await follower.next_item())
    return items


async def test_one_heartbeat_reaches_every_idle_stream_and_skips_busy_ones() -> None:
    hub = _hub(heartbeat_seconds=0.05)
    idle = [hub.follow(uuid.uuid4(), uuid.uuid4()) for _ in range(3)]
    busy = hub.follow(uuid.uuid4(), uuid.uuid4())
    busy.last_seq = 1
    hub.start()
    try:
        busy.deliver(TaskUpdate(busy.task_id, 2, "started", datetime.now(UTC), None, None))
        assert (await busy.next()).seq == 2  # written: the stream is idle again
        await eventually(lambda: all(f.queue for f in idle), within=5, message="the heartbeat")
        frames = [item for follower in idle for item in await _items(follower)]
        # One tick's frame, encoded once, and one only per stream: heartbeats do not pile up.
        assert len(frames) == len(idle)
        [frame] = set(frames)
        assert isinstance(frame, bytes)
        assert frame.startswith(b": ping - ")
        # The busy stream was skipped once, then (idle since) gets the next one.
        await eventually(lambda: bool(busy.queue), within=5, message="the next heartbeat")
    finally:
        await hub.stop()


async def test_a_tick_after_an_update_is_skipped_and_the_next_one_is_not() -> None:
    hub = _hub()
    follower = hub.follow(uuid.uuid4(), uuid.uuid4())
    follower.last_seq = 1
    follower.deliver(TaskUpdate(follower.task_id, 2, "started", datetime.now(UTC), None, None))
    await follower.next()
    follower.heartbeat(b": ping\r\n\r\n")
    assert not follower.queue
    follower.heartbeat(b": ping\r\n\r\n")
    assert list(follower.queue) == [b": ping\r\n\r\n"]


async def test_heartbeats_do_not_pile_up_behind_a_stream_that_is_not_writing() -> None:
    hub = _hub(heartbeat_seconds=0.01)
    follower = hub.follow(uuid.uuid4(), uuid.uuid4())
    reading = hub.follow(uuid.uuid4(), uuid.uuid4())  # drained: counts the hub's ticks
    ticks = 0

    async def three_more_ticks() -> bool:
        nonlocal ticks
        ticks += len(await _items(reading))
        return ticks >= 3

    hub.start()
    try:
        await eventually(three_more_ticks, within=5, message="three heartbeat ticks")
        assert len(follower.queue) == 1  # the one queued heartbeat is enough
    finally:
        await hub.stop()


async def test_a_send_that_waits_past_the_timeout_expires_its_streams_deadline() -> None:
    hub = _hub(send_timeout_seconds=0.2)
    stuck = asyncio.Event()

    async def send(_message: Message) -> None:
        await stuck.wait()  # a client whose buffers are full

    async def stream() -> None:
        async with asyncio.timeout(None) as deadline:
            await hub.sends.send(deadline, send, {"type": "http.response.body"})

    hub.start()
    try:
        writing = asyncio.create_task(stream())
        await eventually(writing.done, within=5, message="the send to be given up")
        with pytest.raises(TimeoutError):
            writing.result()
    finally:
        await hub.stop()


async def test_the_stop_signal_ends_every_stream_and_every_later_one() -> None:
    hub = _hub()
    task_id = uuid.uuid4()
    follower = hub.follow(task_id, uuid.uuid4())
    follower.last_seq = 1
    follower.deliver(TaskUpdate(task_id, 2, "started", datetime.now(UTC), None, None))
    hub.start()
    try:
        hub.end_all_streams()  # what the app's stop-signal callback calls
        assert follower.ended
        assert (await follower.next()).seq == 2  # what it held comes first
        end = await follower.next_item()
        assert isinstance(end, StreamEnd)
        assert end.reason == "the server is shutting down"
        assert hub.follower_count == 0

        later = hub.follow(uuid.uuid4(), uuid.uuid4())
        assert later.ended
        assert hub.follower_count == 0
    finally:
        await hub.stop()
