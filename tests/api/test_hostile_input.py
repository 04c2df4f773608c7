"""Inputs that once made the service answer 500: each must be a 4xx (or a success)."""

from __future__ import annotations

import base64
import uuid

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.helpers import PCM_SAMPLE
from tests.conftest import count_rows

USER = str(uuid.uuid4())


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_a_cursor_whose_time_overflows_in_utc_is_400(client: httpx.AsyncClient) -> None:
    """Year 1 at +14:00 is a valid timestamp that has no UTC equivalent."""
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        cursor = cursor_of(f"{moment}|{uuid.uuid4()}")

        response = await client.get(
            "/tasks", params={"cursor": cursor}, headers={"X-User-Id": USER}
        )

        assert response.status_code == 400, response.text
        assert "cursor" in response.json()["detail"]


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    """A body from (headers, content) pairs, exactly as given."""
    chunks = [
        f"--{boundary}\r\n{head}\r\n\r\n".encode() + content + b"\r\n" for head, content in parts
    ]
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


async def test_a_filename_decoding_to_a_lone_surrogate_is_stored_cleaned(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """UTF-7 `+2AA-` decodes to U+D800, which no database encoding can hold."""
    body = multipart(
        [
            ('Content-Disposition: form-data; name="title"', b"Stella"),
            ('Content-Disposition: form-data; name="text_id"', str(uuid.uuid4()).encode()),
            (
                'Content-Disposition: form-data; name="file"; filename="+2AA-a.pcm"\r\n'
                "Content-Type: application/octet-stream; charset=utf-7",
                PCM_SAMPLE,
            ),
        ]
    )
    headers = {
        "Content-Type": "multipart/form-data; boundary=b0undary; charset=utf-7",
        "X-User-Id": USER,
    }

    response = await client.post("/tasks", content=body, headers=headers)

    assert response.status_code == 201, response.text
    async with engine.connect() as connection:
        filename = await connection.scalar(text("SELECT filename FROM task_audio"))
    assert filename == "a.pcm"
    assert await count_rows(engine, "tasks") == 1


async def test_a_title_decoding_to_a_lone_surrogate_is_422(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = multipart(
        [
            ('Content-Disposition: form-data; name="title"', b"+2AA-"),
            ('Content-Disposition: form-data; name="text_id"', str(uuid.uuid4()).encode()),
            ('Content-Disposition: form-data; name="file"; filename="a.pcm"', PCM_SAMPLE),
        ]
    )
    headers = {
        "Content-Type": "multipart/form-data; boundary=b0undary; charset=utf-7",
        "X-User-Id": USER,
    }

    response = await client.post("/tasks", content=body, headers=headers)

    assert response.status_code == 422, response.text
    assert any("title" in error["loc"] for error in response.json()["detail"])
    assert await count_rows(engine, "tasks") == 0
