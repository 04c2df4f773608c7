"""The one middleware that watches every HTTP request: its id, its status, its time.

Pure ASGI (no `BaseHTTPMiddleware`), so streams pass through untouched. It sees the
response's start and the request's end once, and feeds what it saw to both consumers:
the access log line and the HTTP metrics.
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import REQUEST_ID_HEADER, access_log, incoming_request_id, request_id_var, scope_var
from app.metrics import Metrics


class RequestObserver:
    """Request id in (X-Request-Id or a new one) and out; one access line; HTTP metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        request_token = request_id_var.set(request_id)
        scope_token = scope_var.set(scope)
        started = time.perf_counter()
        status = 500  # what the client sees when the app sends no response at all

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The router has matched by now: the route template is in the scope.
                self.metrics.observe_response_start(scope, time.perf_counter() - started)
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.count_request(scope, status)
            access_log.info(
                "%s %s -> %d (%.1f ms)",
                scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000,
                extra={"method": scope["method"], "path": scope["path"], "status": status},
            )  # fmt: skip
            scope_var.reset(scope_token)
            request_id_var.reset(request_token)
