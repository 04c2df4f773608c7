"""Frames are encoded once per event and format, and are exactly what the formats promise."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sse_starlette import ServerSentEvent

from app.events.frames import heartbeat_frame, legacy_frame, resource_frame
from app.events.updates import TaskUpdate

TASK_ID = uuid.UUID("0b6c5d52-57a4-4b4b-8a8e-1f0e6e7e2c11")
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_completed_event_in_the_resource_format() -> None:
    update = TaskUpdate(TASK_ID, 6, "completed", WHEN, 87.5, None)
    payload = {
        "event": "status_updated",
        "task_id": str(TASK_ID),
        "status": "completed",
        "retry": 15000,
        "seq": 6,
        "time": "2026-01-02T03:04:05+00:00",
        "accuracy": 87.5,
    }
    assert (
        resource_frame(update)
        == (
            f"id: 6\r\nevent: completed\r\ndata: {json.dumps(payload)}\r\nretry: 15000\r\n\r\n"
        ).encode()
    )


def test_a_failed_event_in_the_resource_format_carries_the_comment_unescaped() -> None:
    update = TaskUpdate(TASK_ID, 3, "failed", WHEN, None, "transcribing failed: тайм-аут")
    frame = resource_frame(update).decode()
    data = next(line for line in frame.split("\r\n") if line.startswith("data: "))
    assert json.loads(data.removeprefix("data: "))["comment"] == "transcribing failed: тайм-аут"
    assert "тайм-аут" in frame  # ensure_ascii=False, as before


def test_the_legacy_format_is_one_data_line_with_exactly_the_legacy_fields() -> None:
    update = TaskUpdate(TASK_ID, 4, "transcribing", WHEN, None, None)
    assert legacy_frame(update) == (
        b'data: {"event": "status_updated", "task_id": "0b6c5d52-57a4-4b4b-8a8e-1f0e6e7e2c11", '
        b'"status": "transcribing", "retry": 15000}\r\n\r\n'
    )


def test_each_format_is_encoded_once_per_event_and_shared() -> None:
    update = TaskUpdate(TASK_ID, 2, "started", WHEN, None, None)
    first_resource, first_legacy = resource_frame(update), legacy_frame(update)
    # Every later follower of the task gets the very same bytes, not a new encoding.
    assert resource_frame(update) is first_resource
    assert legacy_frame(update) is first_legacy
    assert first_resource != first_legacy
    assert set(update.frames) == {"resource", "legacy"}
    # The cache takes no part in equality: an update read again equals the one offered.
    assert update == TaskUpdate(TASK_ID, 2, "started", WHEN, None, None)


def test_the_heartbeat_is_a_comment_as_sse_starlette_wrote_it() -> None:
    frame = heartbeat_frame()
    assert frame.startswith(b": ping - ")
    assert frame.endswith(b"\r\n\r\n")
    assert frame.count(b"\r\n") == 2
    assert ServerSentEvent(comment="x").encode() == b": x\r\n\r\n"
