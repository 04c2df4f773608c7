"""With MANAGER_AUTH_JWT_SECRET set, resource routes trust a verified token, not X-User-Id."""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.config import ConfigurationError, Settings
from tests.api.helpers import PCM_SAMPLE
from tests.conftest import make_settings, parsed_json_lines
from tests.waiting import eventually

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
AUDIENCE = "ilps-task-manager"
ISSUER = "https://gateway.ilps.test"


def token(
    user_id: uuid.UUID | str,
    *,
    secret: str = SECRET,
    ttl: int | None = 300,
    **claims: str,
) -> str:
    payload: dict[str, object] = {"sub": str(user_id), "aud": AUDIENCE, "iss": ISSUER, **claims}
    if ttl is not None:
        payload["exp"] = int(time.time()) + ttl
    return jwt.encode(payload, secret, "HS256")


def bearer(user_id: uuid.UUID | str, **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, **kwargs)}"}  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Settings:
    return make_settings(auth_jwt_secret=SECRET, auth_jwt_audience=AUDIENCE, auth_jwt_issuer=ISSUER)


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
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Authorization: Bearer"),
    ],
)
async def test_callers_without_a_token_get_401(
    client: httpx.AsyncClient, headers: dict[str, str], detail: str
) -> None:
    response = await client.get("/tasks", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert detail in response.json()["detail"]


BAD_TOKENS: dict[str, tuple[dict[str, str], str]] = {
    "not a JWT": ({"Authorization": "Bearer not-a-jwt"}, "DecodeError"),
    "expired": (bearer(uuid.uuid4(), ttl=-10), "Signature has expired"),
    "no exp": (bearer(uuid.uuid4(), ttl=None), '"exp"'),
    "wrong secret": (
        bearer(uuid.uuid4(), secret="another-secret-that-is-long-enough-too"),
        "Signature verification failed",
    ),
    "subject not a user id": (bearer("admin"), "not a user id"),
    "another audience": (bearer(uuid.uuid4(), aud="another-service"), "Audience"),
    "another issuer": (bearer(uuid.uuid4(), iss="https://elsewhere.test"), "issuer"),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_a_refused_token_gets_a_plain_401_and_the_reason_is_logged(
    client: httpx.AsyncClient, json_lines: io.StringIO, case: str
) -> None:
    headers, reason = BAD_TOKENS[case]

    response = await client.get("/tasks", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    # The body does not tell a prober which check failed; the log tells the operator.
    assert response.json() == {"detail": "The access token is not valid."}
    refusals = [
        str(line["message"])
        for line in parsed_json_lines(json_lines)
        if "access token refused" in str(line["message"])
    ]
    assert len(refusals) == 1
    assert reason in refusals[0]
    assert "X-Request-Id".lower() in response.headers


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
