"""The listing user's pages: the cursors of its deep pages, a mix of first and deep page
requests, and a check that the pages are what they claim before they are timed."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from app.tasks.repository import PageCursor
from app.tasks.service import encode_cursor
from benchmarks.load import Request

PAGE_SIZE = 20


async def deep_cursors(connection: Any, user: uuid.UUID) -> list[str]:
    """The cursor after every full page of `user`'s tasks but the last, newest first."""
    rows = await connection.fetch(
        "SELECT created_at, id FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
        user,
    )
    return [
        encode_cursor(PageCursor(rows[index]["created_at"], rows[index]["id"]))
        for index in range(PAGE_SIZE - 1, len(rows) - 1, PAGE_SIZE)
    ]


def page_requests(
    user: uuid.UUID, cursors: Sequence[str], count: int, first_share: float
) -> list[Request]:
    """`count` page reads: about `first_share` of them first pages, the rest deep cursors
    (the same mix in every run: the generator is seeded)."""
    rng = random.Random(2)
    headers = {"X-User-Id": str(user)}
    return [
        Request("GET", f"/tasks?limit={PAGE_SIZE}", headers)
        if rng.random() < first_share
        else Request("GET", f"/tasks?limit={PAGE_SIZE}&cursor={rng.choice(cursors)}", headers)
        for _ in range(count)
    ]


async def check_pages(probe: httpx.AsyncClient, user: uuid.UUID, cursors: Sequence[str]) -> None:
    """A first and a deep page, each full, before any is timed."""
    headers = {"X-User-Id": str(user)}
    first = await probe.get(f"/tasks?limit={PAGE_SIZE}", headers=headers)
    deep = await probe.get(f"/tasks?limit={PAGE_SIZE}&cursor={cursors[-2]}", headers=headers)
    for response in (first, deep):
        if response.status_code != 200 or len(response.json()["items"]) != PAGE_SIZE:
            raise RuntimeError(f"unexpected page: {response.status_code} {response.text[:300]}")
