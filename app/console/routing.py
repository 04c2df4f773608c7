"""Console routes judge their caller on the headers, before any body is read.

A dependency would run only after FastAPI has read and parsed the body, so the checks
sit in the route classes; bodies are then capped like every other JSON body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute

from app.api.upload import ResourceRoute, capped_body
from app.config import Settings
from app.console.auth import (
    FORBIDDEN,
    console_enabled,
    operator_by_bearer,
    operator_by_headers,
    peer_trusted,
)
from app.runtime import Runtime

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class OperatorRoute(APIRoute):
    """404 while the console is off; 403 unless the headers show an operator."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        has_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            settings: Settings = request.app.state.runtime.settings
            self.check_caller(request, settings)
            if not has_body:
                return await handler(request)
            return await handler(capped_body(request, settings.json_body_max_bytes))

        return guarded

    def check_caller(self, request: Request, settings: Settings) -> None:
        console_enabled(settings)
        if not operator_by_headers(request, settings):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)


class LoginRoute(OperatorRoute):
    """The login form: the one console route a trusted client may call without a session."""

    def check_caller(self, request: Request, settings: Settings) -> None:
        console_enabled(settings)
        if not peer_trusted(request, settings):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)


class OwnerOrOperatorRoute(ResourceRoute):
    """`POST /tasks/{id}/retry`: an operator's token, or the owner named as on `/tasks`."""

    def check_caller(self, request: Request, runtime: Runtime) -> None:
        if operator_by_bearer(request, runtime.settings):
            return
        super().check_caller(request, runtime)
