"""A retried upload with the same Idempotency-Key returns the first task."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.helpers import legacy_upload, resource_upload
from tests.conftest import count_rows


async def test_legacy_repeat_returns_the_first_task(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    text_id = uuid.uuid4()
    headers = {"Idempotency-Key": "upload-1"}
    first = await legacy_upload(client, user_id, text_id=text_id, headers=headers)
    second = await legacy_upload(client, user_id, text_id=text_id, headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert await count_rows(engine, "tasks") == 1


async def test_resource_repeat_answers_200_with_the_same_task(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    text_id = uuid.uuid4()
    headers = {"Idempotency-Key": "upload-2"}
    first = await resource_upload(client, user_id, text_id=text_id, headers=headers)
    second = await resource_upload(client, user_id, text_id=text_id, headers=headers)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert await count_rows(engine, "tasks") == 1


async def test_same_key_with_another_body_is_a_conflict(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    headers = {"Idempotency-Key": "upload-3"}
    await resource_upload(client, user_id, audio=b"\x00\x01" * 100, headers=headers)
    conflict = await resource_upload(client, user_id, audio=b"\x00\x02" * 100, headers=headers)

    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["detail"]
    assert await count_rows(engine, "tasks") == 1


async def test_keys_are_per_user(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    text_id = uuid.uuid4()
    a = await resource_upload(client, user_id, text_id=text_id, headers=headers)
    b = await resource_upload(client, uuid.uuid4(), text_id=text_id, headers=headers)

    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_simultaneous_retries_create_one_task(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    text_id = uuid.uuid4()
    headers = {"Idempotency-Key": "racing"}
    responses = await asyncio.gather(
        *(resource_upload(client, user_id, text_id=text_id, headers=headers) for _ in range(5))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_rows(engine, "tasks") == 1
