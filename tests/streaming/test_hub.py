"""The hub's logic on a source in memory: fan-out, placing and resuming, batched reads,
deleted tasks, and what a follower that falls behind sees. No database, no server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from app.events.follower import FOLLOWER_QUEUE_SIZE, Follower, StreamEnd
from app.events.hub import EventHub, TooManyFollowers, TooManyFollowersForUser
from app.events.opening import NothingToResume, open_stream
from app.events.updates import TaskUpdate
from app.tasks.errors import TaskNotFound
from tests.streaming.memory_source import MemoryTransitions
from tests.waiting import eventually


def _update(task_id: uuid.UUID, seq: int) -> TaskUpdate:
    return TaskUpdate(task_id, seq, "started", datetime.now(UTC), None, None)


@pytest.fixture
def source() -> MemoryTransitions:
    return MemoryTransitions()


@pytest.fixture
async def hub(source: MemoryTransitions) -> AsyncIterator[EventHub]:
    hub = EventHub(source, max_followers=10, max_followers_per_user=10)
    hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


def _seqs(follower: Follower) -> list[int]:
    return [item.seq for item in follower.queue if isinstance(item, TaskUpdate)]


async def test_a_follower_that_falls_behind_gets_a_gapless_prefix_then_the_end(
    source: MemoryTransitions,
) -> None:
    hub = EventHub(source, max_followers=10, max_followers_per_user=10)
    task_id = uuid.uuid4()
    follower = hub.follow(task_id, uuid.uuid4())
    hub.place(follower, 0)

    for seq in range(1, FOLLOWER_QUEUE_SIZE + 10):
        follower.deliver(_update(task_id, seq))

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


async def test_a_notified_transition_reaches_every_follower_of_its_task_only(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    task_id, other_task = source.create(owner), source.create(owner)
    followers = [(await open_stream(hub, task_id, owner, after_seq=None)).follower for _ in "ab"]
    bystander = (await open_stream(hub, other_task, owner, after_seq=None)).follower

    started = source.record(task_id, "started")
    hub.on_task_event(task_id, started.seq)
    await eventually(lambda: all(f.queue for f in followers), message="the fan-out")

    assert [f.queue[0] for f in followers] == [started, started]
    # One object for all of them: each format of its frame is encoded once.
    assert followers[0].queue[0] is followers[1].queue[0]
    assert not bystander.queue


async def test_a_notification_for_an_unfollowed_task_reads_nothing(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    followed, unfollowed = source.create(owner), source.create(owner)
    follower = (await open_stream(hub, followed, owner, after_seq=None)).follower
    await eventually(lambda: source.batch_cursors, message="the read after placing")

    hub.on_task_event(unfollowed, source.record(unfollowed, "started").seq)
    hub.on_task_event(followed, source.record(followed, "started").seq)
    await eventually(lambda: follower.queue, message="the followed task's update")
    assert all(unfollowed not in cursors for cursors in source.batch_cursors)


async def test_the_first_event_is_the_current_state_and_a_resume_replays_what_came_after(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    task_id = source.create(owner, "created", "started", "preprocessing")

    current = await open_stream(hub, task_id, owner, after_seq=None)
    assert [u.seq for u in current.backlog] == [3]
    resumed = await open_stream(hub, task_id, owner, after_seq=1)
    assert [u.seq for u in resumed.backlog] == [2, 3]
    # An id this task never issued: the client's view is unknown, so everything.
    unknown = await open_stream(hub, task_id, owner, after_seq=99)
    assert [u.seq for u in unknown.backlog] == [1, 2, 3]

    hub.on_task_event(task_id, source.record(task_id, "transcribing").seq)
    streams = (current, resumed, unknown)
    await eventually(lambda: all(s.follower.queue for s in streams), message="the next event")
    # Each sees the new event once, after its backlog.
    assert [_seqs(s.follower) for s in streams] == [[4], [4], [4]]


async def test_resuming_after_the_terminal_event_has_nothing_to_send(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    task_id = source.create(owner, "created", "started", "failed")
    with pytest.raises(NothingToResume):
        await open_stream(hub, task_id, owner, after_seq=3)
    assert hub.follower_count == 0
    replay = await open_stream(hub, task_id, owner, after_seq=2)
    assert [u.status for u in replay.backlog] == ["failed"]


async def test_another_users_task_or_a_missing_one_is_not_found_and_frees_the_slot(
    hub: EventHub, source: MemoryTransitions
) -> None:
    task_id = source.create(uuid.uuid4())
    with pytest.raises(TaskNotFound):
        await open_stream(hub, task_id, uuid.uuid4(), after_seq=None)
    with pytest.raises(TaskNotFound):
        await open_stream(hub, uuid.uuid4(), uuid.uuid4(), after_seq=None)
    assert hub.follower_count == 0


async def test_the_caps_count_open_followers_per_process_and_per_user(
    source: MemoryTransitions,
) -> None:
    hub = EventHub(source, max_followers=3, max_followers_per_user=2)
    first, second = uuid.uuid4(), uuid.uuid4()
    held = [hub.follow(uuid.uuid4(), first), hub.follow(uuid.uuid4(), first)]
    with pytest.raises(TooManyFollowersForUser):
        hub.follow(uuid.uuid4(), first)
    hub.follow(uuid.uuid4(), second)
    with pytest.raises(TooManyFollowers):
        hub.follow(uuid.uuid4(), second)
    held[0].close("the client disconnected")
    hub.follow(uuid.uuid4(), first)  # its slot was given back
    assert hub.follower_count == 3


async def test_a_deleted_task_ends_its_followers_after_what_they_hold(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    task_id = source.create(owner)
    followers = [(await open_stream(hub, task_id, owner, after_seq=None)).follower for _ in "ab"]
    hub.on_task_event(task_id, source.record(task_id, "started").seq)
    await eventually(lambda: all(f.queue for f in followers), message="the update")

    source.delete(task_id)
    hub.on_task_event(task_id, 0)
    await eventually(lambda: all(f.ended for f in followers), message="the end")
    for follower in followers:
        assert (await follower.next()).status == "started"
        with pytest.raises(StreamEnd, match="the task was deleted"):
            await follower.next()
    assert hub.follower_count == 0


async def test_one_read_serves_every_notified_task_from_its_least_advanced_follower(
    source: MemoryTransitions,
) -> None:
    hub = EventHub(source, max_followers=10, max_followers_per_user=10)
    owner = uuid.uuid4()
    one, two = source.create(owner), source.create(owner, "created", "started")
    behind, ahead, other = hub.follow(one, owner), hub.follow(one, owner), hub.follow(two, owner)
    hub.place(behind, 0)
    hub.place(ahead, 1)
    hub.place(other, 2)
    unplaced = hub.follow(one, owner)  # still reading its starting point
    source.record(one, "started")
    source.record(two, "preprocessing")
    hub.on_task_event(one, 2)
    hub.on_task_event(two, 3)

    hub.start()  # every notification so far is read in one batch
    try:
        await eventually(lambda: other.queue and len(behind.queue) == 2, message="the batch")
    finally:
        await hub.stop()
    assert source.batch_cursors == [{one: 0, two: 2}]
    # Both tasks had news: none was asked whether it still exists.
    assert source.existence_checks == []
    assert (_seqs(behind), _seqs(ahead), _seqs(other)) == ([1, 2], [2], [3])
    assert _seqs(unplaced) == []


async def test_a_task_with_nothing_new_is_checked_for_existence_and_kept(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    task_id = source.create(owner)
    follower = (await open_stream(hub, task_id, owner, after_seq=None)).follower
    await eventually(lambda: source.existence_checks, message="the read after placing")
    assert source.existence_checks == [[task_id]]
    assert not follower.ended
    assert hub.follower_count == 1


async def test_a_failed_read_is_retried_and_loses_nothing(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    task_id = source.create(owner)
    follower = (await open_stream(hub, task_id, owner, after_seq=None)).follower
    await eventually(lambda: source.batch_cursors, message="the read after placing")

    source.failing_batches = 1
    hub.on_task_event(task_id, source.record(task_id, "started").seq)
    await eventually(lambda: not source.failing_batches, message="the failed read")
    hub.on_task_event(task_id, source.record(task_id, "preprocessing").seq)
    await eventually(lambda: len(follower.queue) == 2, message="the retried read")
    assert _seqs(follower) == [2, 3]


async def test_a_listener_reconnect_rereads_every_followed_task(
    hub: EventHub, source: MemoryTransitions
) -> None:
    owner = uuid.uuid4()
    tasks = [source.create(owner), source.create(owner)]
    followers = [(await open_stream(hub, t, owner, after_seq=None)).follower for t in tasks]
    await eventually(lambda: source.batch_cursors, message="the reads after placing")

    for task_id in tasks:  # notifications lost while the listener was away
        source.record(task_id, "started")
    hub.on_reconnect()
    await eventually(lambda: all(f.queue for f in followers), message="the re-read")
    assert [_seqs(f) for f in followers] == [[2], [2]]
