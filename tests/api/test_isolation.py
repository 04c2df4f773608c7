"""Every route that takes a task id answers another user's task exactly like a missing one."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.helpers import resource_upload

# (method, path template, how the caller is named)
TASK_ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/{task_id}", "body"),
    ("POST", "/{task_id}/stream", "body"),
    ("GET", "/tasks/{task_id}", "header"),
    ("DELETE", "/tasks/{task_id}", "header"),
    ("GET", "/tasks/{task_id}/deliveries", "header"),
    ("GET", "/tasks/{task_id}/events", "header"),
    ("GET", "/tasks/{task_id}/events", "query"),
    ("POST", "/tasks/{task_id}/retry", "header"),
]


def request_for(caller: str, user_id: uuid.UUID) -> dict[str, Any]:
    if caller == "body":
        return {"json": {"user_id": str(user_id)}}
    if caller == "query":
        return {"params": {"user_id": str(user_id)}}
    return {"headers": {"X-User-Id": str(user_id)}}


def test_every_task_route_is_covered(app: FastAPI) -> None:
    in_app = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        # The console's routes are for operators, who see every task (tests/api/test_console).
        if "{task_id}" in path and not path.startswith("/console/")
        for method in operations
    }
    assert in_app == {(method, path) for method, path, _ in TASK_ROUTES}


@pytest.mark.parametrize(("method", "path", "caller"), TASK_ROUTES)
async def test_foreign_task_is_indistinguishable_from_a_missing_one(
    client: httpx.AsyncClient, user_id: uuid.UUID, method: str, path: str, caller: str
) -> None:
    owned = (await resource_upload(client, user_id)).json()["id"]
    stranger = uuid.uuid4()

    foreign = await client.request(
        method, path.format(task_id=owned), **request_for(caller, stranger)
    )
    missing = await client.request(
        method, path.format(task_id=uuid.uuid4()), **request_for(caller, stranger)
    )

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"detail": "Task not found."}
    assert foreign.headers["content-type"] == missing.headers["content-type"]
    # And the owner still has it: the stranger changed nothing.
    still_there = await client.get(f"/tasks/{owned}", headers={"X-User-Id": str(user_id)})
    assert still_there.status_code == 200
