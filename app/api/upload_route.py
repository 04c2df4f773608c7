"""Route classes that look at a request's headers before anything reads its body.

FastAPI parses a form body before it runs a route's dependencies, so a check written
as a dependency (who is calling, is this multipart at all) would come only after the
whole upload had been received. These routes answer 401, 403, 413 and 415 from the
headers alone, then parse the form within the upload memory budget and with caps on
its parts, and only then hand over to FastAPI, which finds the form parsed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from app.api.identity import require_trusted_client, resolve_caller
from app.api.multipart_form import BufferedFormParser, MultipartFormError
from app.api.uploads import (
    PARSE_MEMORY_BYTES,
    UPLOAD_FORM_LIMITS,
    UPLOAD_PART_CAPS,
    require_multipart,
)
from app.runtime import Runtime

log = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# How long an upload waits, unread, for its share of the memory budget before it is
# received on disk instead. Shares come back as uploads are stored (a 5 MB one within
# tens of milliseconds), so at load nearly every upload takes the cheaper way through
# memory; while slow clients hold the budget, others lose at most this long.
MEMORY_PATIENCE_SECONDS = 1.0

# Not an HTTP status but the one proxies (nginx) log for a client that closed first.
CLIENT_CLOSED_REQUEST = 499


class UploadAwareRoute(APIRoute):
    """Checks what the headers tell before the body of a form route is read."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        reads_form = self.body_field is not None and isinstance(self.body_field.field_info, Form)

        async def guarded(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            self.check_caller(request, runtime)
            if not reads_form:
                return await handler(request)
            await require_multipart(request)
            try:
                async with received_upload_form(request, runtime):
                    return await handler(request)
            except ClientDisconnect:
                return abandoned_upload(request, runtime)

        return guarded

    def check_caller(self, request: Request, runtime: Runtime) -> None:
        """Raise if the headers show the caller may not make this request."""


def abandoned_upload(request: Request, runtime: Runtime) -> Response:
    """The client went away mid-body: an everyday event on mobile networks, not a fault.

    Nothing was stored (the task is created only from a whole form). The answer is
    never read; its status, 499 as proxies log it, keeps the request out of the 5xx
    counts and shows in the access line.
    """
    runtime.metrics.uploads_abandoned.inc()
    log.info("upload abandoned: the client went away before the whole body arrived")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


class ResourceRoute(UploadAwareRoute):
    """`/tasks`: an upload without a valid identity is refused before it is read."""

    def get_route_handler(self) -> Handler:
        # Only uploads are guarded: on the reads the dependency alone checks the caller,
        # so a page read does not verify a token twice.
        if self.body_field is None:
            return super(UploadAwareRoute, self).get_route_handler()
        return super().get_route_handler()

    def check_caller(self, request: Request, runtime: Runtime) -> None:
        raw_user_id = request.headers.get("x-user-id")
        forwarded: uuid.UUID | None = None
        if raw_user_id is not None and runtime.settings.auth_jwt_secret is None:
            try:
                forwarded = uuid.UUID(raw_user_id)
            except ValueError:
                raise RequestValidationError(
                    [
                        {
                            "type": "uuid_parsing",
                            "loc": ("header", "X-User-Id"),
                            "msg": "Input should be a valid UUID",
                            "input": raw_user_id,
                        }
                    ]
                ) from None
        resolve_caller(
            runtime.settings,
            forwarded_user_id=forwarded,
            authorization=request.headers.get("authorization"),
        )


class LegacyRoute(UploadAwareRoute):
    """The gateway's routes: callers outside `MANAGER_TRUSTED_CLIENTS` get 403 at once."""

    def check_caller(self, request: Request, runtime: Runtime) -> None:
        client = request.client
        require_trusted_client(runtime.settings, client.host if client else None)


@asynccontextmanager
async def received_upload_form(request: Request, runtime: Runtime) -> AsyncIterator[None]:
    """Parse the form within the upload memory budget; the block runs the route.

    A body that declares its length, and whose storage share of the budget is free
    within `MEMORY_PATIENCE_SECONDS`, is parsed into memory (`BufferedFormParser`) and
    holds that share until the route has stored it. Any other body is parsed by
    Starlette, its file spooled to disk, while it holds a parse share: at most one
    spooled file's in-memory part and its capped text fields. That share is taken
    before the first byte is read, so uploads parsed together stay within the budget
    and the rest wait with their bodies unread; the route then waits for the storage
    share (`create_from_upload`).
    """
    declared = _content_length(request)
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
    # Where Starlette keeps the form it parsed: FastAPI's `request.form()` returns it.
    request._form = form


def _content_length(request: Request) -> int | None:
    try:
        declared = int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None
    return declared if declared >= 0 else None
