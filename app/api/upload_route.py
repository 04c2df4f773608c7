"""Route classes that look at a request's headers before anything reads its body.

FastAPI parses a form body before it runs a route's dependencies, so a check written
as a dependency (who is calling, is this multipart at all) would come only after the
whole upload had been received. These routes answer 401, 403, 413 and 415 from the
headers alone, then parse the form within the upload memory budget and with caps on
its parts, and only then hand over to FastAPI.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.routing import APIRoute

from app.api.identity import require_trusted_client, resolve_caller
from app.api.uploads import PARSE_MEMORY_BYTES, UPLOAD_FORM_LIMITS, require_multipart
from app.runtime import Runtime

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class UploadAwareRoute(APIRoute):
    """Checks what the headers tell before the body of a form route is read."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        reads_form = self.body_field is not None and isinstance(self.body_field.field_info, Form)

        async def guarded(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            self.check_caller(request, runtime)
            if reads_form:
                await require_multipart(request)
                await parse_upload_form(request, runtime)
            return await handler(request)

        return guarded

    def check_caller(self, request: Request, runtime: Runtime) -> None:
        """Raise if the headers show the caller may not make this request."""


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


async def parse_upload_form(request: Request, runtime: Runtime) -> None:
    """Parse the form (FastAPI then finds it parsed) while holding its share of the budget.

    While it is parsed a form holds at most one spooled file's in-memory part and its
    capped text fields; the share is taken before the first byte is read, so parsing
    uploads together stay within the budget and the rest wait with their bodies unread.
    """
    declared = _content_length(request)
    share = PARSE_MEMORY_BYTES if declared is None else min(declared, PARSE_MEMORY_BYTES)
    async with runtime.upload_memory.reserve_bytes(share):
        await request.form(**UPLOAD_FORM_LIMITS)


def _content_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None
