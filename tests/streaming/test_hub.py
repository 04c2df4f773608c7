"""The hub's follower queues, without a server: what a follower that falls behind sees."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from app.events.hub import FOLLOWER_QUEUE_SIZE, EventHub, StreamEnd
from app.events.updates import TaskUpdate


def _update(task_id: uuid.UUID, seq: int) -> TaskUpdate:
    return TaskUpdate(task_id, seq, "started", datetime.now(UTC), None, None)


async def test_a_follower_that_falls_behind_gets_a_gapless_prefix_then_the_end() -> None:
    # The sessions are never used: nothing here reads the database.
    hub = EventHub(cast(Any, None), max_followers=10, max_followers_per_user=10)
    task_id = uuid.uuid4()
    follower = hub.follow(task_id, uuid.uuid4())
    follower.placed_at(0)

    for seq in range(1, FOLLOWER_QUEUE_SIZE + 10):
        follower.offer(_update(task_id, seq))

    received: list[int] = []
    for _ in range(FOLLOWER_QUEUE_SIZE):
        received.append((await follower.next()).seq)
    with pytest.raises(StreamEnd) as ended:
        await follower.next()
    # The client resumes after the last id it saw, so what it saw must have no hole.
    assert received == list(range(1, FOLLOWER_QUEUE_SIZE + 1))
    assert ended.value.reason == "the follower fell behind"
    assert hub.follower_count == 0
    assert not follower.queue  # one end, not one per further update
