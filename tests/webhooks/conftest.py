"""Webhook fixtures: a verifying receiver, settings with short deadlines, task endings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.api.helpers import resource_upload
from tests.conftest import make_settings
from tests.waiting import eventually
from tests.webhooks.receiver import SECRET, Receiver, running_receiver

# Short deadlines, so retry and timeout paths finish in a second or two.
FAST: dict[str, Any] = {
    "webhook_secret": SECRET,
    "webhook_allowed_hosts": "127.0.0.1",
    "webhook_timeout_seconds": 2.0,
    "webhook_backoff_base_seconds": 0.05,
    "webhook_backoff_max_seconds": 0.3,
    "webhook_poll_seconds": 0.1,
    "webhook_concurrency": 4,
    "webhook_breaker_cooldown_seconds": 0.2,
    "webhook_breaker_max_cooldown_seconds": 0.5,
}


def webhook_settings(**overrides: Any) -> Settings:
    return make_settings(**{**FAST, **overrides})


@pytest.fixture
def settings() -> Settings:
    return webhook_settings()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


async def create_with_callback(
    client: httpx.AsyncClient, user_id: uuid.UUID, callback_url: str
) -> httpx.Response:
    return await resource_upload(client, user_id, form_extra={"callback_url": callback_url})


async def create_task(client: httpx.AsyncClient, user_id: uuid.UUID, callback_url: str) -> str:
    response = await create_with_callback(client, user_id, callback_url)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def finish(engine: AsyncEngine, task_ids: list[str], status: str = "completed") -> None:
    """End tasks as the pipeline's last write does: one UPDATE of the status, committed."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE tasks SET status = :status, completed_at = now(), updated_at = now() "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"status": status, "ids": task_ids},
        )


async def deliveries(engine: AsyncEngine, task_id: str | None = None) -> list[dict[str, Any]]:
    query = "SELECT * FROM webhook_deliveries"
    if task_id is not None:
        query += " WHERE task_id = :id"
    async with engine.connect() as connection:
        rows = await connection.execute(text(query + " ORDER BY created_at, id"), {"id": task_id})
        return [dict(row) for row in rows.mappings()]


async def attempts(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT * FROM webhook_attempts ORDER BY delivery_id, attempt")
        )
        return [dict(row) for row in rows.mappings()]


async def wait_states(
    engine: AsyncEngine, count: int, state: str = "delivered", within: float = 20.0
) -> list[dict[str, Any]]:
    async def reached() -> list[dict[str, Any]] | None:
        rows = await deliveries(engine)
        done = [row for row in rows if row["state"] == state]
        return rows if len(done) == count else None

    return await eventually(reached, within=within, message=f"{count} deliveries {state}")
