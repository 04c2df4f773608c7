"""Pipeline fixtures: fake audio services and an app whose workers call them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.api.helpers import resource_upload
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices, audio_for, new_marker
from tests.waiting import eventually


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes)


class Uploader:
    """Creates tasks through the API, each with its own audio marker."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def create(
        self, user_id: uuid.UUID | None = None, text_id: uuid.UUID | None = None
    ) -> tuple[str, str]:
        marker = new_marker()
        response = await resource_upload(
            self.client, user_id or uuid.uuid4(), text_id=text_id, audio=audio_for(marker)
        )
        assert response.status_code == 201, response.text
        return response.json()["id"], marker


@pytest.fixture
def uploader(client: httpx.AsyncClient) -> Uploader:
    return Uploader(client)


async def task_row(engine: AsyncEngine, task_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(text("SELECT * FROM tasks WHERE id = :id"), {"id": task_id}))
            .mappings()
            .one_or_none()
        )
    return dict(row) if row else None


async def wait_terminal(engine: AsyncEngine, task_id: str, within: float = 20.0) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        row = await task_row(engine, task_id)
        return row if row and row["status"] in ("completed", "failed") else None

    return await eventually(finished, within=within, message=f"task {task_id} to finish")


async def event_log(engine: AsyncEngine, task_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT * FROM task_events WHERE task_id = :id ORDER BY seq"), {"id": task_id}
        )
        return [dict(row) for row in rows.mappings()]
