"""The `/tasks` routes: create with Location, cursor pages, detail, the 404 rule."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.api.helpers import resource_upload


async def test_create_answers_201_with_location_and_the_task(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    text_id = uuid.uuid4()
    response = await resource_upload(client, user_id, title="Stella", text_id=text_id)

    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"/tasks/{task['id']}"
    assert task["status"] == "created"
    assert task["user_id"] == str(user_id)
    assert task["text_id"] == str(text_id)
    assert task["title"] == "Stella"

    detail = await client.get(response.headers["location"], headers={"X-User-Id": str(user_id)})
    assert detail.status_code == 200
    assert detail.json()["id"] == task["id"]


async def test_detail_of_another_users_task_is_not_found(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    task_id = (await resource_upload(client, user_id)).json()["id"]

    foreign = await client.get(f"/tasks/{task_id}", headers={"X-User-Id": str(uuid.uuid4())})
    missing = await client.get(f"/tasks/{uuid.uuid4()}", headers={"X-User-Id": str(user_id)})

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"detail": "Task not found."}


async def test_missing_or_malformed_user_header_is_refused(client: httpx.AsyncClient) -> None:
    missing = await client.get("/tasks")
    assert missing.status_code == 401
    assert "X-User-Id" in missing.json()["detail"]
    assert (await client.get("/tasks", headers={"X-User-Id": "not-a-uuid"})).status_code == 422


async def test_pages_walk_every_task_once_newest_first(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    created = [
        (await resource_upload(client, user_id, title=f"t{i}")).json()["id"] for i in range(7)
    ]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/tasks", params=params, headers={"X-User-Id": str(user_id)})
        assert page.status_code == 200
        body = page.json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(created))


async def test_pagination_neither_skips_nor_repeats_while_tasks_are_inserted(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    before = [(await resource_upload(client, user_id)).json()["id"] for _ in range(10)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        # Another upload lands between every two page reads.
        await resource_upload(client, user_id)
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (
            await client.get("/tasks", params=params, headers={"X-User-Id": str(user_id)})
        ).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen)), "a task was repeated"
    assert set(before) <= set(seen), "a task that existed before the walk was skipped"


async def test_status_filter_and_limit_bounds(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    await resource_upload(client, user_id)
    headers = {"X-User-Id": str(user_id)}

    created = await client.get("/tasks", params={"status": "created"}, headers=headers)
    completed = await client.get("/tasks", params={"status": "completed"}, headers=headers)
    assert len(created.json()["items"]) == 1
    assert completed.json()["items"] == []

    for bad in ({"limit": 0}, {"limit": 101}, {"status": "bogus"}):
        assert (await client.get("/tasks", params=bad, headers=headers)).status_code == 422


async def test_a_forged_cursor_is_a_clear_400(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    for cursor in ("garbage", "bm90IGEgY3Vyc29y", "!!!!"):
        response = await client.get(
            "/tasks", params={"cursor": cursor}, headers={"X-User-Id": str(user_id)}
        )
        assert response.status_code == 400
        assert "cursor" in response.json()["detail"]


async def test_concurrent_uploads_all_land(client: httpx.AsyncClient, user_id: uuid.UUID) -> None:
    responses = await asyncio.gather(*(resource_upload(client, user_id) for _ in range(10)))
    assert [r.status_code for r in responses] == [201] * 10
    page = await client.get("/tasks", params={"limit": 100}, headers={"X-User-Id": str(user_id)})
    assert len(page.json()["items"]) == 10


async def test_openapi_documents_both_families(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/transcribe", "/", "/{task_id}", "/health", "/tasks", "/tasks/{task_id}"):
        assert path in paths
    assert (await client.get("/docs")).status_code == 200
