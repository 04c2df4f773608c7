"""A JSON body refused by its Content-Type, and capped while it streams in."""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from python_multipart.multipart import parse_options_header
from starlette.types import Message

from app.api.upload.headers import content_length


def require_json(request: Request) -> None:
    """415 for a body that says it is not JSON. One without a Content-Type is left to
    FastAPI, which answers it as it always has."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    kind = parse_options_header(content_type)[0].decode("latin-1").lower()
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="Send the body as application/json."
    )


def json_too_large(limit_bytes: int) -> HTTPException:
    # Connection: close: the server need not wait for the rest of a body nobody reads.
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"The JSON body is larger than the limit of {limit_bytes // 1024} KiB.",
        headers={"Connection": "close"},
    )


def capped_body(request: Request, limit_bytes: int) -> Request:
    """The request, its body refused with 413 as soon as it passes `limit_bytes`: at once
    when its Content-Length says so, else when the bytes received cross the limit."""
    declared = content_length(request.scope["headers"])
    if declared is not None and declared > limit_bytes:
        raise json_too_large(limit_bytes)
    receive = request.receive
    received = 0

    async def capped_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit_bytes:
                raise json_too_large(limit_bytes)
        return message

    return Request(request.scope, capped_receive)
