"""An upload form received within the upload memory budget, into memory when it can.

A body that declares its length, and whose storage share of the budget is free within
`MEMORY_PATIENCE_SECONDS`, is parsed into memory (`BufferedFormParser`) and holds that
share until the route has stored it. Any other body is parsed by Starlette, its file
spooled to disk, while it holds a parse share: at most one spooled file's in-memory
part and its capped text fields. That share is taken before the first byte is read, so
uploads parsed together stay within the budget and the rest wait with their bodies
unread; the route then waits for the storage share (`create_from_upload`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import HTTPException, Request, status
from python_multipart.multipart import parse_options_header

from app.api.upload.form_parser import BufferedFormParser, MultipartFormError
from app.api.upload.headers import content_length
from app.api.upload.limits import PARSE_MEMORY_BYTES, UPLOAD_FORM_LIMITS, UPLOAD_PART_CAPS
from app.compat import keep_parsed_form
from app.runtime import Runtime

# How long an upload waits, unread, for its share of the memory budget before it is
# received on disk instead. Shares come back as uploads are stored, so at load nearly
# every upload takes the cheaper way through memory; while slow clients hold the
# budget, others lose at most this long.
MEMORY_PATIENCE_SECONDS = 1.0


@asynccontextmanager
async def received_upload_form(request: Request, runtime: Runtime) -> AsyncIterator[None]:
    """Parse the form within the upload memory budget; the block runs the route, which
    finds the form parsed."""
    declared = content_length(request.scope["headers"])
    if declared is not None:
        memory = runtime.upload_memory
        async with memory.reserve_within(declared, MEMORY_PATIENCE_SECONDS) as held:
            if held:
                await _parse_into_memory(request, declared)
                yield
                return
    share = PARSE_MEMORY_BYTES if declared is None else min(declared, PARSE_MEMORY_BYTES)
    async with runtime.upload_memory.reserve_bytes(share):
        await request.form(**UPLOAD_FORM_LIMITS)
    yield


async def _parse_into_memory(request: Request, declared: int) -> None:
    content_type = request.headers["content-type"]
    if parse_options_header(content_type)[0] != b"multipart/form-data":
        await request.form(**UPLOAD_FORM_LIMITS)  # not a form after all: an empty one
        return
    try:
        parser = BufferedFormParser(content_type, UPLOAD_PART_CAPS, body_length=declared)
        form = await parser.parse(request.stream())
    except MultipartFormError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=error.message) from None
    keep_parsed_form(request, form)
