"""Refuse oversized uploads while they stream in, never holding the whole body in memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.uploads import upload_too_large

# Room for the multipart boundaries and the small text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadSizeLimit:
    """ASGI middleware: 413 as soon as a request body passes the upload limit.

    A declared Content-Length over the limit is refused before any byte is read; a body
    that grows past it (chunked, or a lying header) is cut off where it crosses. The
    `HTTPException` raised from `receive` surfaces through FastAPI's form parsing as a
    normal JSON error response.
    """

    def __init__(self, app: ASGIApp, *, max_upload_mb: float) -> None:
        self.app = app
        self.max_upload_mb = max_upload_mb
        self.max_body_bytes = int(max_upload_mb * 1024 * 1024) + FORM_OVERHEAD_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_body_bytes:
                raise upload_too_large(self.max_upload_mb)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise upload_too_large(self.max_upload_mb)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
