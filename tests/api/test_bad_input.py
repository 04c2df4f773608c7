"""Every bad upload gets a clear 4xx JSON error and leaves nothing behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.api.helpers import PCM_SAMPLE, call_without_body
from tests.conftest import count_rows, make_settings

USER = str(uuid.uuid4())
TEXT = str(uuid.uuid4())
GOOD_FORM = {"title": "Stella", "user_id": USER, "text_id": TEXT}
GOOD_FILE = ("recording.pcm", PCM_SAMPLE, "application/octet-stream")


def without(form: dict[str, str], field: str) -> dict[str, str]:
    return {key: value for key, value in form.items() if key != field}


BAD_UPLOADS: dict[str, dict[str, Any]] = {
    # A text part keeps the body multipart, so only the file is missing.
    "missing file": {"data": GOOD_FORM, "files": {"note": (None, "x")}, "field": "file"},
    "empty file": {
        "data": GOOD_FORM,
        "files": {"file": ("a.pcm", b"", "application/octet-stream")},
        "field": "file",
        "message": "empty",
    },
    "missing title": {"data": without(GOOD_FORM, "title"), "field": "title"},
    "empty title": {"data": {**GOOD_FORM, "title": ""}, "field": "title"},
    "blank title": {"data": {**GOOD_FORM, "title": "   "}, "field": "title", "message": "blank"},
    # PostgreSQL refuses NUL in text: the form must turn it away before the database does.
    "title with a NUL": {"data": {**GOOD_FORM, "title": "a\x00b"}, "field": "title"},
    "title over 50 characters": {"data": {**GOOD_FORM, "title": "я" * 51}, "field": "title"},
    "malformed text_id": {"data": {**GOOD_FORM, "text_id": "nope"}, "field": "text_id"},
    "missing text_id": {"data": without(GOOD_FORM, "text_id"), "field": "text_id"},
    # The validation error then echoes an uploaded file, which must not break its encoding.
    "text_id sent as a file": {
        "data": without(GOOD_FORM, "text_id"),
        "files": {"text_id": ("id.txt", b"not an id", "text/plain")},
        "field": "text_id",
    },
}
LEGACY_ONLY: dict[str, dict[str, Any]] = {
    "malformed user_id": {"data": {**GOOD_FORM, "user_id": "123"}, "field": "user_id"},
    "missing user_id": {"data": without(GOOD_FORM, "user_id"), "field": "user_id"},
}


async def post_legacy(client: httpx.AsyncClient, **kwargs: Any) -> httpx.Response:
    return await client.post("/transcribe", **kwargs)


async def post_resource(client: httpx.AsyncClient, **kwargs: Any) -> httpx.Response:
    data = {k: v for k, v in (kwargs.pop("data", None) or {}).items() if k != "user_id"}
    return await client.post("/tasks", data=data, headers={"X-User-Id": USER}, **kwargs)


Poster = Callable[..., Awaitable[httpx.Response]]
ROUTES = {"legacy": post_legacy, "resource": post_resource}


def assert_clear_error(response: httpx.Response, case: dict[str, Any]) -> None:
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    if "field" in case:
        assert response.status_code == 422, response.text
        assert any(case["field"] in error["loc"] for error in detail), detail
    if "message" in case:
        assert any(case["message"] in error["msg"] for error in detail), detail


CASES = [(route, name) for route in ROUTES for name in BAD_UPLOADS] + [
    ("legacy", name)
    for name in LEGACY_ONLY  # the resource route takes X-User-Id instead
]


@pytest.mark.parametrize(("route", "case_name"), CASES)
async def test_bad_upload_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, route: str, case_name: str
) -> None:
    case = {**BAD_UPLOADS, **LEGACY_ONLY}[case_name]
    files = case.get("files", {"file": GOOD_FILE})

    response = await ROUTES[route](client, data=case["data"], files=files)

    assert_clear_error(response, case)
    assert await count_rows(engine, "tasks") == 0
    assert await count_rows(engine, "task_audio") == 0


@pytest.mark.parametrize("route", ["/transcribe", "/tasks"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", b'{"title": "x"}'), ("text/plain", b"hello"), (None, b"")],
)
async def test_a_body_that_is_not_multipart_is_415(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    route: str,
    content_type: str | None,
    body: bytes,
) -> None:
    headers = {"X-User-Id": USER}
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(route, content=body, headers=headers)

    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]
    assert await count_rows(engine, "tasks") == 0


async def test_a_malformed_multipart_body_is_a_4xx(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await client.post(
        "/transcribe",
        content=b'--xyz\r\nContent-Disposition: form-data; name="title"\r\n\r\nunterminated',
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()
    assert await count_rows(engine, "tasks") == 0


@pytest.fixture
def settings() -> Settings:
    return make_settings(max_upload_mb=1)


@pytest.mark.parametrize("route", ROUTES)
async def test_a_file_over_the_limit_is_413(
    client: httpx.AsyncClient, engine: AsyncEngine, route: str
) -> None:
    too_big = b"\x00" * (1024 * 1024 + 4)
    response = await ROUTES[route](
        client, data=GOOD_FORM, files={"file": ("big.pcm", too_big, "application/octet-stream")}
    )

    assert response.status_code == 413
    assert "1 MB" in response.json()["detail"]
    assert await count_rows(engine, "tasks") == 0


async def test_a_declared_oversized_body_is_refused_before_it_is_read(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The body is never consumed: the app answers from the Content-Length header alone."""
    status, reads = await call_without_body(
        app,
        "/transcribe",
        [(b"content-type", b"multipart/form-data; boundary=xyz")],
        client_host="10.0.0.2",  # a trusted peer: only the size is judged
        content_length=50 * 1024 * 1024,
    )

    assert status == 413
    assert reads == 0


async def test_legacy_reads_refuse_malformed_bodies(client: httpx.AsyncClient) -> None:
    assert (await client.post("/", json={"user_id": "nope"})).status_code == 422
    assert (await client.post("/", json={})).status_code == 422
    assert (
        await client.post("/", content=b"{not json", headers={"Content-Type": "application/json"})
    ).status_code == 422
    assert (await client.post("/not-a-uuid", json={"user_id": USER})).status_code == 422


async def test_odd_file_metadata_is_cleaned_not_fatal(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Found by the fuzzer: a 300-character filename overflowed its column (a 500)."""
    response = await client.post(
        "/transcribe",
        data=GOOD_FORM,
        files={"file": ("x" * 300 + "\x01.pcm", PCM_SAMPLE, "application/octet-stream")},
    )

    assert response.status_code == 200
    async with engine.connect() as connection:
        filename = await connection.scalar(text("SELECT filename FROM task_audio"))
    assert filename == "x" * 255


async def test_uploads_beyond_the_memory_budget_wait_their_turn() -> None:
    """Concurrent uploads never hold more than the budget in memory together."""
    from app.upload_memory import UploadMemory

    memory = UploadMemory(budget_bytes=10)
    inside = 0
    most = 0

    async def upload(size: int) -> None:
        nonlocal inside, most
        held = min(memory.budget, size * 2)  # one upload larger than the budget takes it all
        async with memory.reserve(size):
            inside += held
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= held

    await asyncio.gather(*(upload(2) for _ in range(8)), upload(100))
    assert most <= 10
    assert memory.free == memory.budget
