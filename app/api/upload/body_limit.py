"""Refuse oversized or crawling request bodies while they stream in, never holding the
whole body in memory."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.upload.errors import upload_too_large
from app.api.upload.headers import content_length

# Room for the multipart boundaries and the small text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


def body_too_slow() -> HTTPException:
    # Connection: close makes the server drop the connection after the answer, rather
    # than wait for the rest of a body nobody will read.
    return HTTPException(
        status.HTTP_408_REQUEST_TIMEOUT,
        detail="The request body arrived too slowly; retry on a better connection.",
        headers={"Connection": "close"},
    )


class UploadSizeLimit:
    """ASGI middleware: 413 as soon as a request body passes the upload limit, 408 when
    it arrives slower than the minimum rate.

    A declared Content-Length over the limit is refused before any byte is read; a body
    that grows past it (chunked, or a lying header) is cut off where it crosses. The
    rate is measured from the first read of the body (an upload waiting for its turn
    in the memory budget is not yet being read): after `grace_seconds`, the body must
    have kept up `min_rate_bytes` per second on average. The `HTTPException`s raised
    from `receive` surface through FastAPI's body parsing as normal JSON responses.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_upload_mb: float,
        min_rate_bytes: float,
        grace_seconds: float,
    ) -> None:
        self.app = app
        self.max_upload_mb = max_upload_mb
        self.max_body_bytes = int(max_upload_mb * 1024 * 1024) + FORM_OVERHEAD_BYTES
        self.min_rate_bytes = min_rate_bytes
        self.grace_seconds = grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        declared = content_length(scope["headers"])
        received = 0
        started: float | None = None
        body_done = False
        loop = asyncio.get_running_loop()

        async def limited_receive() -> Message:
            nonlocal received, started, body_done
            if declared is not None and declared > self.max_body_bytes:
                raise upload_too_large(self.max_upload_mb)
            if body_done:  # e.g. a stream listening for the disconnect: no deadline
                return await receive()
            if started is None:
                started = loop.time()
            deadline = started + self.grace_seconds + received / self.min_rate_bytes
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise body_too_slow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise upload_too_large(self.max_upload_mb)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)
