"""Route classes that look at a request's headers before anything reads its body.

FastAPI parses a form body before it runs a route's dependencies, so a check written
as a dependency (who is calling, is this multipart at all) would come only after the
whole upload had been received. These routes answer 401, 403, 413 and 415 from the
headers alone, then receive the form (`received_upload_form`) and only then hand over
to FastAPI, which finds the form parsed. A JSON body is capped at
`MANAGER_JSON_BODY_MAX_KB` while it streams in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.params import Form
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from app.api.identity import (
    UNTRUSTED_HEADER,
    forwarded_user_header,
    parse_user_id,
    require_trusted_client,
    resolve_caller,
)
from app.api.upload.headers import require_multipart
from app.api.upload.json_body import capped_body, require_json
from app.api.upload.reception import received_upload_form
from app.runtime import Runtime

log = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

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
