"""With MANAGER_AUTH_JWT_SECRET set, resource routes trust a verified token, not X-User-Id."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.config import ConfigurationError, Settings
from tests.api.helpers import PCM_SAMPLE
from tests.conftest import make_settings
from tests.waiting import eventually

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def token(user_id: uuid.UUID | str, *, secret: str = SECRET, ttl: int = 300) -> str:
    return jwt.encode({"sub": str(user_id), "exp": int(time.time()) + ttl}, secret, "HS256")


def bearer(user_id: uuid.UUID | str, **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, **kwargs)}"}  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Settings:
    return make_settings(auth_jwt_secret=SECRET)


async def upload(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/tasks",
        data={"title": "x", "text_id": str(uuid.uuid4())},
        files={"file": ("a.pcm", PCM_SAMPLE, "application/octet-stream")},
        headers=headers,
    )


async def test_a_valid_token_identifies_the_caller(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    created = await upload(client, bearer(user_id))
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert created.json()["user_id"] == str(user_id)

    mine = await client.get(f"/tasks/{task_id}", headers=bearer(user_id))
    theirs = await client.get(f"/tasks/{task_id}", headers=bearer(uuid.uuid4()))
    assert mine.status_code == 200
    assert theirs.status_code == 404


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"X-User-Id": str(uuid.uuid4())}, "Authorization: Bearer"),
        ({"Authorization": "Bearer not-a-jwt"}, "not valid"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Authorization: Bearer"),
        (None, "has expired"),
        ("wrong-secret", "not valid"),
        ("bad-subject", "not a user id"),
    ],
)
async def test_untrusted_callers_get_401(
    client: httpx.AsyncClient, headers: dict[str, str] | str | None, detail: str
) -> None:
    if headers is None:
        headers = bearer(uuid.uuid4(), ttl=-10)
    elif headers == "wrong-secret":
        headers = bearer(uuid.uuid4(), secret="another-secret-that-is-long-enough-too")
    elif headers == "bad-subject":
        headers = bearer("admin")
    assert isinstance(headers, dict)

    response = await client.get("/tasks", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert detail in response.json()["detail"]


async def test_eventsource_passes_the_token_as_access_token(
    app: FastAPI, client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    task_id = (await upload(client, bearer(user_id))).json()["id"]
    path = f"/tasks/{task_id}/events"

    foreign = await client.get(path, params={"access_token": token(uuid.uuid4())})
    forwarded_only = await client.get(path, params={"user_id": str(user_id)})
    assert foreign.status_code == 404
    assert forwarded_only.status_code == 401

    # The stream of a created task stays open; deleting the task ends it.
    stream = asyncio.create_task(client.get(path, params={"access_token": token(user_id)}))
    hub = app.state.runtime.hub
    await eventually(lambda: hub.follower_count == 1)
    await client.delete(f"/tasks/{task_id}", headers=bearer(user_id))
    response = await asyncio.wait_for(stream, timeout=10)
    assert response.status_code == 200
    assert "event: created" in response.text


def test_a_short_secret_is_refused_outside_debug_mode() -> None:
    with pytest.raises(ConfigurationError, match="MANAGER_AUTH_JWT_SECRET"):
        Settings(
            _env_file=None, debug_mode=False, db_postgres_host="db", db_postgres_password="x",
            auth_jwt_secret="short",
            service_preprocessing={"host": "a", "port": 1},
            service_transcribing={"host": "a", "port": 1},
            service_feedback={"host": "a", "port": 1},
        ).check_required()  # fmt: skip
