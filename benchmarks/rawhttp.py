"""A minimal HTTP/1.1 client over asyncio streams, for the timed loops only.

Why not httpx there: the load generator shares the two cores with the service and
PostgreSQL, and httpx costs an order of magnitude more client CPU per request than this
client (benchmarks/README.md has the figures), which would cap the measured rate and add
to every latency that is meant to be the service's. Everything untimed (health checks,
probes, the fake stages) uses httpx.

It speaks only what the service answers: Content-Length or chunked bodies, keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of an HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def iter_body(
    reader: asyncio.StreamReader, headers: Mapping[str, str]
) -> AsyncIterator[bytes]:
    """The body as it arrives: by Content-Length, chunked, or until the connection ends."""
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 16))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
            yield chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    else:
        while chunk := await reader.read(1 << 16):
            yield chunk


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, reopened after an error or `Connection: close`."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpResponse:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._streams()
                lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
                if body or method in ("POST", "PUT", "PATCH"):
                    lines.append(f"Content-Length: {len(body)}")
                lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                if body:
                    writer.write(body)
                await writer.drain()
                status, response_headers = await read_head(reader)
                content = b"".join([chunk async for chunk in iter_body(reader, response_headers)])
        except BaseException:
            await self.close()
            raise
        if response_headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, response_headers, content)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
