"""The benchmarks' raw HTTP/1.1 client (benchmarks/rawhttp.py) against a loopback server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from benchmarks.rawhttp import HttpConnection, iter_body, read_head


@dataclass(frozen=True)
class Reply:
    data: bytes = b""
    close: bool = False  # close the connection once `data` is written
    hang: bool = False  # answer nothing, hold the connection until the client goes


@dataclass
class ScriptedServer:
    """Answers each request with the next reply of its script and records what arrived."""

    script: list[Reply]
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((request_line, headers, body))
                reply = self.script.pop(0)
                if reply.hang:
                    await reader.read()  # until the client gives up and closes
                    return
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(*script: Reply) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(list(script))
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def ok(body: bytes, *extra: bytes) -> Reply:
    head = [b"HTTP/1.1 200 OK", b"Content-Length: " + str(len(body)).encode(), *extra]
    return Reply(b"\r\n".join(head) + b"\r\n\r\n" + body)


async def test_a_get_sends_no_body_and_reads_one_by_its_length() -> None:
    async with serving(ok(b'{"status": "healthy"}', b"Content-Type: application/json")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        response = await connection.request("GET", "/health", headers={"X-User-Id": "u1"})
        await connection.close()

    assert server.requests == [
        ("GET /health HTTP/1.1", {"host": f"127.0.0.1:{server.port}", "x-user-id": "u1"}, b"")
    ]
    assert response.status == 200
    assert response.headers == {"content-length": "21", "content-type": "application/json"}
    assert response.body == b'{"status": "healthy"}'
    assert response.json() == {"status": "healthy"}


async def test_a_post_sends_its_body_with_its_length() -> None:
    async with serving(Reply(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        response = await connection.request(
            "POST", "/tasks", headers={"Content-Type": "application/json"}, body=b'{"a": 1}'
        )
        await connection.close()

    [(line, headers, body)] = server.requests
    assert line == "POST /tasks HTTP/1.1"
    assert headers["content-length"] == "8"
    assert headers["content-type"] == "application/json"
    assert body == b'{"a": 1}'
    assert (response.status, response.body) == (201, b"")


async def test_a_post_without_a_body_still_says_its_length() -> None:
    async with serving(ok(b"")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        await connection.request("POST", "/")
        await connection.close()

    [(_, headers, _)] = server.requests
    assert headers["content-length"] == "0"


async def test_requests_share_one_kept_alive_connection() -> None:
    async with serving(ok(b"first"), ok(b"second"), ok(b"third")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        bodies = [(await connection.request("GET", f"/{n}")).body for n in range(3)]
        await connection.close()

    assert bodies == [b"first", b"second", b"third"]
    assert [line for line, _, _ in server.requests] == [
        "GET /0 HTTP/1.1",
        "GET /1 HTTP/1.1",
        "GET /2 HTTP/1.1",
    ]
    assert server.connections == 1


async def test_connection_close_makes_the_next_request_reconnect() -> None:
    closing = ok(b"bye", b"Connection: close")
    async with serving(Reply(closing.data, close=True), ok(b"again")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        first = await connection.request("GET", "/")
        second = await connection.request("GET", "/")
        await connection.close()

    assert (first.body, second.body) == (b"bye", b"again")
    assert server.connections == 2


async def test_a_chunked_body_is_joined_and_its_trailers_skipped() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"
        b"7;name=value\r\n, world\r\n"
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    async with serving(Reply(chunked), ok(b"next")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        response = await connection.request("GET", "/stream")
        # The trailers were read to their end: the connection is ready for the next answer.
        following = await connection.request("GET", "/")
        await connection.close()

    assert response.body == b"hello, world"
    assert response.headers == {"transfer-encoding": "chunked"}
    assert following.body == b"next"
    assert server.connections == 1


async def test_a_body_without_length_or_chunks_runs_to_the_connection_s_end() -> None:
    async with serving(Reply(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True)) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        response = await connection.request("GET", "/")
        await connection.close()

    assert (response.status, response.body) == (200, b"all of it")


async def test_a_body_cut_short_raises_and_the_next_request_reconnects() -> None:
    short = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)
    async with serving(short, ok(b"whole")) as server:
        connection = HttpConnection("127.0.0.1", server.port)
        with pytest.raises(asyncio.IncompleteReadError):
            await connection.request("GET", "/")
        response = await connection.request("GET", "/")
        await connection.close()

    assert response.body == b"whole"
    assert server.connections == 2


async def test_no_answer_within_the_timeout_raises_and_closes_the_connection() -> None:
    async with serving(Reply(hang=True), ok(b"later")) as server:
        connection = HttpConnection("127.0.0.1", server.port, timeout=0.2)
        with pytest.raises(TimeoutError):
            await connection.request("GET", "/slow")
        response = await connection.request("GET", "/")
        await connection.close()

    assert response.body == b"later"
    assert server.connections == 2


async def test_a_refused_connection_raises() -> None:
    async with serving() as server:
        port = server.port
    connection = HttpConnection("127.0.0.1", port)  # nothing listens there any more
    with pytest.raises(ConnectionRefusedError):
        await connection.request("GET", "/")


async def test_read_head_and_iter_body_stream_a_chunked_answer_piece_by_piece() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, headers = await read_head(reader)
    pieces = iter_body(reader, headers)
    # Each chunk is handed over as it arrives, before the next was even sent.
    reader.feed_data(b"7\r\nid: 1\n\n\r\n")
    assert await anext(pieces) == b"id: 1\n\n"
    reader.feed_data(b"7\r\nid: 2\n\n\r\n0\r\n\r\n")
    assert await anext(pieces) == b"id: 2\n\n"
    with pytest.raises(StopAsyncIteration):
        await anext(pieces)
    assert status == 200
    assert headers == {"content-type": "text/event-stream", "transfer-encoding": "chunked"}
