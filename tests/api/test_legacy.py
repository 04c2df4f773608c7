"""The legacy routes answer exactly as docs/legacy-api.md describes."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.helpers import PCM_SAMPLE, legacy_upload, user_body
from tests.conftest import count_rows


async def test_upload_returns_only_the_new_id_and_stores_task_with_audio(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    response = await legacy_upload(client, user_id)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id"}
    uuid.UUID(body["id"])
    assert await count_rows(engine, "tasks") == 1
    assert await count_rows(engine, "task_audio") == 1


async def test_list_returns_the_users_tasks_newest_first_in_the_legacy_shape(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    ids = [(await legacy_upload(client, user_id, title=f"t{i}")).json()["id"] for i in range(3)]
    await legacy_upload(client, uuid.uuid4())  # someone else's

    response = await client.post("/", json=user_body(user_id))

    assert response.status_code == 200
    rows = response.json()
    assert [row["id"] for row in rows] == list(reversed(ids))
    for row in rows:
        assert set(row) == {"id", "status", "title", "accuracy", "created_at"}
        assert row["status"] == "created"
        assert row["accuracy"] is None
        assert datetime.fromisoformat(row["created_at"]).tzinfo is not None


async def test_list_of_a_user_without_tasks_is_empty(client: httpx.AsyncClient) -> None:
    response = await client.post("/", json=user_body(uuid.uuid4()))
    assert response.status_code == 200
    assert response.json() == []


async def test_detail_has_exactly_the_legacy_fields(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    text_id = uuid.uuid4()
    task_id = (await legacy_upload(client, user_id, title="Stella", text_id=text_id)).json()["id"]

    response = await client.post(f"/{task_id}", json=user_body(user_id))

    assert response.status_code == 200
    assert response.json() == {
        "id": task_id,
        "title": "Stella",
        "text_id": str(text_id),
        "status": "created",
        "result": None,
        "accuracy": None,
        "mistakes": None,
        "comment": None,
    }


async def test_detail_of_another_users_task_is_not_found(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    task_id = (await legacy_upload(client, user_id)).json()["id"]

    foreign = await client.post(f"/{task_id}", json=user_body(uuid.uuid4()))
    missing = await client.post(f"/{uuid.uuid4()}", json=user_body(user_id))

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"detail": "Task not found."}


async def test_health_has_the_legacy_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["system"]) == {"hostname", "os", "os_version"}
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


async def test_the_file_part_may_have_any_name_and_content_type(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    response = await client.post(
        "/transcribe",
        data={"title": "x", "user_id": str(user_id), "text_id": str(uuid.uuid4())},
        files={"file": ("voice.m4a", PCM_SAMPLE, "audio/x-whatever")},
    )
    assert response.status_code == 200
