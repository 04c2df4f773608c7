"""Building requests the way the gateway and the mobile app send them."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from typing import Any

import httpx
from fastapi import FastAPI

PCM_SAMPLE = b"\x01\x00\x02\x00" * 2048  # a few milliseconds of s16le stereo


async def legacy_upload(
    client: httpx.AsyncClient,
    user_id: uuid.UUID,
    *,
    title: str = "Please call Stella",
    text_id: uuid.UUID | None = None,
    audio: bytes = PCM_SAMPLE,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """`POST /transcribe` as the gateway sends it: the user in the form."""
    form = {"title": title, "user_id": str(user_id), "text_id": str(text_id or uuid.uuid4())}
    return await _upload(client, "/transcribe", form, audio, headers or {})


async def resource_upload(
    client: httpx.AsyncClient,
    user_id: uuid.UUID,
    *,
    title: str = "Please call Stella",
    text_id: uuid.UUID | None = None,
    audio: bytes = PCM_SAMPLE,
    headers: dict[str, str] | None = None,
    form_extra: dict[str, str] | None = None,
) -> httpx.Response:
    """`POST /tasks`: the user in `X-User-Id`."""
    form = {"title": title, "text_id": str(text_id or uuid.uuid4()), **(form_extra or {})}
    return await _upload(
        client, "/tasks", form, audio, {"X-User-Id": str(user_id), **(headers or {})}
    )


async def _upload(
    client: httpx.AsyncClient,
    path: str,
    form: dict[str, str],
    audio: bytes,
    headers: dict[str, str],
) -> httpx.Response:
    files = {"file": ("recording.pcm", audio, "application/octet-stream")}
    return await client.post(path, data=form, files=files, headers=headers)


def user_body(user_id: uuid.UUID) -> dict[str, Any]:
    return {"user_id": str(user_id)}


async def call_without_body(
    app: FastAPI,
    path: str,
    headers: list[tuple[bytes, bytes]],
    client_host: str = "127.0.0.1",
    content_length: int | None = 20 * 1024 * 1024,
) -> tuple[int, int]:
    """Send headers, then a body that never ends (declared as `content_length`, or
    undeclared when None); returns (status, how many times the app asked for the body)."""
    reads: list[int] = []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    declared = [] if content_length is None else [(b"content-length", b"%d" % content_length)]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "client": (client_host, 1),
        "headers": [*declared, *headers],
        "state": {},
    }
    await app(scope, receive, send)
    return sent[0]["status"], len(reads)
