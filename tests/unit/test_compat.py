"""Each seam of app/compat.py still does what it relies on, against the installed library.

A library upgrade that renames or drops one of these private attributes fails here, by
the seam's name, instead of degrading quietly where the seam is used.
"""

from __future__ import annotations

import socket
import threading
import traceback

import asyncpg
import httpcore
import httpx
from sqlalchemy import URL
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message

from app.api.upload.part_buffer import PartBuffer
from app.compat import (
    connection_socket,
    keep_parsed_form,
    replace_connection_pool,
    replace_exception_message,
    served_inline,
)
from app.db.url import asyncpg_dsn


def _form_request() -> Request:
    async def receive() -> Message:
        raise AssertionError("the body was read")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", b"multipart/form-data; boundary=xyz")],
    }
    return Request(scope, receive)


async def test_a_kept_form_is_what_request_form_returns_and_closes() -> None:
    request = _form_request()
    buffer = PartBuffer(4)
    form = FormData([("title", "Please call Stella"), ("file", UploadFile(file=buffer))])  # type: ignore[arg-type]
    keep_parsed_form(request, form)
    assert await request.form(max_files=1, max_fields=8) is form
    await request.close()
    assert buffer.closed


class _ThreadRecorder:
    """A file-like object that notes the thread each read runs on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.threads.append(threading.get_ident())
        return b""


@served_inline
class _InMemory(_ThreadRecorder):
    pass


async def test_upload_file_calls_a_file_served_inline_on_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    in_memory, unmarked = _InMemory(), _ThreadRecorder()
    await UploadFile(file=in_memory).read()  # type: ignore[arg-type]
    await UploadFile(file=unmarked).read()  # type: ignore[arg-type]
    assert in_memory.threads == [loop_thread]
    # The seam is what decides: a file without the mark is read on a worker thread.
    assert unmarked.threads != [loop_thread]
    assert len(unmarked.threads) == 1


async def test_a_replaced_pool_carries_the_transports_requests() -> None:
    answer = [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n", b"\r\n", b"ok"]
    transport = httpx.AsyncHTTPTransport()
    pool = httpcore.AsyncConnectionPool(network_backend=httpcore.AsyncMockBackend(answer))
    replace_connection_pool(transport, pool)
    # An address that cannot resolve: only the mock backend can answer it.
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("http://receiver.invalid/")
    assert (response.status_code, response.text) == (200, "ok")


async def test_an_asyncpg_connection_shows_its_socket(database_url: URL) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        sock = connection_socket(connection)
        assert sock is not None
        assert sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
        assert sock.fileno() >= 0
    finally:
        await connection.close()


def test_a_replaced_exception_message_is_what_the_traceback_shows() -> None:
    quoted = "invalid input: 'Please call Stella'"
    try:
        raise ValueError(quoted)  # the source line shows the name, not the value
    except ValueError as error:
        rendered = traceback.TracebackException.from_exception(error)
    replace_exception_message(rendered, "message withheld")
    text = "".join(rendered.format())
    assert text.rstrip("\n").endswith("ValueError: message withheld")
    assert "Stella" not in text
