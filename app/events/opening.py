"""Opening a stream: a follower placed in a task's history, with what it must see first."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.events.follower import Follower
from app.events.hub import EventHub
from app.events.updates import TaskUpdate
from app.tasks.errors import TaskNotFound

# Event ids are the history's `seq`, a PostgreSQL integer: larger ids are refused (422).
MAX_EVENT_ID = 2**31 - 1


@dataclass
class OpenStream:
    """A follower placed in a task's history, with the updates it must see first."""

    follower: Follower
    backlog: list[TaskUpdate]


class NothingToResume(Exception):
    """The client resumes after the task's terminal event: it has seen the whole run."""


async def open_stream(
    hub: EventHub, task_id: uuid.UUID, user_id: uuid.UUID, *, after_seq: int | None
) -> OpenStream:
    """Follow first, then read, so no transition falls between the read and the follow.

    `after_seq` None starts at the current state; otherwise the stream replays what came
    after it, and an id the task never issued (past its last event) replays everything.
    Raises `TooManyFollowers` (the route answers 503), `TooManyFollowersForUser` (429),
    `TaskNotFound` (404) or `NothingToResume` (204).
    """
    follower = hub.follow(task_id, user_id)
    try:
        state = await hub.task_state(task_id)
        if state is None or state.user_id != user_id:
            raise TaskNotFound()
        if after_seq is None:
            backlog = [state.current]
        else:
            if after_seq > state.current.seq:
                after_seq = 0  # not an id of this task's: the client's view is unknown
            elif after_seq == state.current.seq and state.current.is_terminal:
                raise NothingToResume()
            backlog = await hub.history(task_id, after_seq=after_seq)
    except BaseException:
        hub.unfollow(follower)
        raise
    hub.place(follower, backlog[-1].seq if backlog else (after_seq or 0))
    return OpenStream(follower=follower, backlog=backlog)
