"""What a request's headers say about its body, read before any of the body is."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import HTTPException, Request, status


def content_length(raw_headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body's declared length, or None when it declares none we can use.

    Takes the ASGI scope's raw header list, so that middleware and routes read it alike.
    """
    for name, value in raw_headers:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return None
            return declared if declared >= 0 else None
    return None


async def require_multipart(request: Request) -> None:
    """Refuse a body that is not a form upload before anything else is looked at."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=(
                "Send the upload as multipart/form-data with the fields file, title and text_id."
            ),
        )
