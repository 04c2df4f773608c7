"""The body of a delivery: built once, stored, and sent byte for byte on every attempt."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def delivery_body(event_type: str, occurred_at: datetime, task: dict[str, Any]) -> bytes:
    """`{"type", "timestamp", "data"}`; `data` is the task as its detail route shows it.

    `timestamp` is when the task ended (the outbox row's creation, in the transaction
    that wrote the terminal status), not when the body happened to be built.
    """
    document = {"type": event_type, "timestamp": occurred_at.isoformat(), "data": task}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
