"""Odd requests written byte by byte to a real uvicorn: none may produce a 5xx."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from sqlalchemy import URL

from app.config import Settings
from app.main import create_app
from tests.api.helpers import PCM_SAMPLE
from tests.conftest import make_settings
from tests.live import live_server

USER = str(uuid.uuid4()).encode()


@pytest.fixture
def settings() -> Settings:
    # A short grace and a high rate, so a stalled body is ended within a second or two.
    return make_settings(upload_rate_grace_seconds=0.5, upload_min_rate_kbps=64)


@pytest.fixture
def base(settings: Settings, database_url: URL, clean_database: None) -> Iterator[tuple[str, int]]:
    app: FastAPI = create_app(settings, database_url=database_url)
    with live_server(app) as base_url:
        parts = urlsplit(base_url)
        yield str(parts.hostname), int(parts.port or 0)


async def exchange(
    address: tuple[str, int], request: bytes, *, then_stall: bool = False, within: float = 20
) -> tuple[int | None, bytes, bool]:
    """Send `request`; returns (status or None, the raw answer, whether the server closed)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(within):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if then_stall:
                rest = await reader.read()  # until the server closes the connection
                return status, head + rest, True
            return status, head, False
    except asyncio.IncompleteReadError as error:  # closed without an answer
        return None, error.partial, True
    finally:
        writer.close()


def upload_head(length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /tasks HTTP/1.1\r\nHost: t\r\nX-User-Id: " + USER + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n" + extra + b"\r\n"
    )


async def test_a_stalled_upload_is_ended_with_408_and_the_connection_closed(
    base: tuple[str, int],
) -> None:
    partial = b'--xyz\r\nContent-Disposition: form-data; name="title"\r\n\r\nSte'

    status, answer, closed = await exchange(
        base, upload_head(24 * 1024 * 1024) + partial, then_stall=True
    )

    assert status == 408
    assert b"too slowly" in answer
    assert closed


def form(*parts: bytes) -> bytes:
    return b"".join(b"--xyz\r\n" + part + b"\r\n" for part in parts) + b"--xyz--\r\n"


TITLE = b'Content-Disposition: form-data; name="title"\r\n\r\nStella'
TEXT = b'Content-Disposition: form-data; name="text_id"\r\n\r\n' + str(uuid.uuid4()).encode()
FILE = b'Content-Disposition: form-data; name="file"; filename="a.pcm"\r\n\r\n' + PCM_SAMPLE


def post(body: bytes, path: bytes = b"/tasks", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nX-User-Id: " + USER + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def get(path: bytes, extra: bytes = b"") -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nX-User-Id: " + USER + b"\r\n" + extra + b"\r\n"
    )


ODDITIES: dict[str, bytes] = {
    "bad percent-encoding": get(b"/tasks/%zz%"),
    "percent-encoded invalid UTF-8": get(b"/tasks/%ff%fe"),
    "percent-encoded NUL": get(b"/tasks/%00"),
    "cursor with invalid UTF-8": get(b"/tasks?cursor=%ff%fe%fd"),
    "made-up method": b"BREW /tasks HTTP/1.1\r\nHost: t\r\n\r\n",
    "huge header": get(b"/tasks", b"X-Filler: " + b"a" * 200_000 + b"\r\n"),
    "many headers": get(b"/tasks", b"".join(b"X-H%d: v\r\n" % n for n in range(2000))),
    "non-ASCII header bytes": get(b"/tasks", b"X-Request-Id: \xff\xfe\r\n"),
    "X-User-Id in latin-1": get(b"/tasks").replace(USER, b"\xe9\xe9"),
    "Authorization garbage": get(b"/tasks", b"Authorization: Bearer \xff\x00\r\n"),
    "Content-Length not a number": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    "negative Content-Length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
    "invalid UTF-8 in a field": post(form(TITLE + b"\xff\xfe", TEXT, FILE)),
    "invalid UTF-8 in a field name": post(form(TITLE.replace(b"title", b"t\xffitle"), TEXT, FILE)),
    "duplicate fields": post(form(TITLE, TITLE + b"2", TEXT, TEXT, FILE)),
    "field named file, not a file": post(
        form(TITLE, TEXT, b'Content-Disposition: form-data; name="file"\r\n\r\nhello')
    ),
    "part without a name": post(form(b"Content-Disposition: form-data\r\n\r\nx", TITLE)),
    "part without headers": post(form(b"\r\njust data", TITLE)),
    "boundary missing": post(form(TITLE)).replace(b"; boundary=xyz", b""),
    "empty boundary": post(form(TITLE)).replace(b"boundary=xyz", b"boundary="),
    "unknown charset": post(form(TITLE, TEXT, FILE)).replace(
        b"boundary=xyz", b"boundary=xyz; charset=no-such-charset"
    ),
    "utf-7 everything": post(form(TITLE.replace(b"Stella", b"+2AA-"), TEXT, FILE)).replace(
        b"boundary=xyz", b"boundary=xyz; charset=utf-7"
    ),
    "idempotency key in latin-1": post(form(TITLE, TEXT, FILE), extra=b"Idempotency-Key: \xe9\r\n"),
    "legacy upload, user id garbage": post(
        form(TITLE, TEXT, FILE, b'Content-Disposition: form-data; name="user_id"\r\n\r\n\xff'),
        path=b"/transcribe",
    ),
    "legacy JSON with a lone surrogate": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 20\r\n\r\n{"user_id": "\\ud800"}'[:-1]
    ),
    "chunked garbage": (
        b"POST /tasks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", ODDITIES)
async def test_an_odd_request_never_gets_a_5xx(base: tuple[str, int], case: str) -> None:
    status, answer, _ = await exchange(base, ODDITIES[case])

    # None: the HTTP layer closed a request it could not parse, which is fine.
    assert status is None or status < 500, answer[:500]
