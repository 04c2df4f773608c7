"""Route classes that look at a request's headers before anything reads its body.

FastAPI parses a form body before it runs a route's dependencies, so a check written
as a dependency (who is calling, is this multipart at all) would come only after the
whole upload had been received. These routes answer 401, 403, 413 and 415 from the
headers alone, then parse the form within the upload memory budget and with caps on
its parts, and only then hand over to FastAPI, which finds the form parsed. A JSON body
is capped at `MANAGER_JSON_BODY_MAX_KB` while it streams in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.params import Form
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect
from starlette.types import Message

from app.api.identity import (
    UNTRUSTED_HEADER,
    forwarded_user_header,
    parse_user_id,
    require_trusted_client,
    resolve_caller,
)
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
        reads_json = self.body_field is not None and not reads_form

        async def guarded(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            self.check_caller(request, runtime)
            if reads_json:
                require_json(request)
                return await handler(capped_body(request, runtime.settings.json_body_max_bytes))
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
        raw_user_id = forwarded_user_header(request.headers)
        client_host = request.client.host if request.client else None
        forwarded: uuid.UUID | None = None
        if raw_user_id is not None and runtime.settings.auth_jwt_secret is None:
            # An outsider's header is refused as such, not parsed.
            require_trusted_client(runtime.settings, client_host, detail=UNTRUSTED_HEADER)
            forwarded = parse_user_id(raw_user_id)
        resolve_caller(
            runtime.settings,
            client_host=client_host,
            forwarded_user_id=forwarded,
            authorization=request.headers.get("authorization"),
        )


class LegacyRoute(UploadAwareRoute):
    """The gateway's routes: callers outside `MANAGER_TRUSTED_CLIENTS` get 403 at once."""

    def check_caller(self, request: Request, runtime: Runtime) -> None:
        client = request.client
        require_trusted_client(runtime.settings, client.host if client else None)


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
    declared = _content_length(request)
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
