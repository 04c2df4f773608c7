"""The one middleware that watches every HTTP request: its id, its status, its time.

Pure ASGI (no `BaseHTTPMiddleware`), so streams pass through untouched. It sees the
response's start and the request's end once, and feeds what it saw to both consumers:
the access log line and the HTTP metrics.
"""

from __future__ import annotations

import itertools
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import (
    REQUEST_ID_HEADER,
    access_log,
    incoming_request_id,
    printable,
    request_id_var,
    scope_var,
)
from app.metrics import Metrics


class RequestIds:
    """Fresh request ids: 32 hex digits, a random prefix per process and a counter.

    Unique without asking the kernel for randomness per request, as `uuid4` does (a
    `getrandom` call per request, see docs/performance.md). A forked child
    draws its own prefix, so workers forked from one parent never share ids.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


# One per process (and one fork hook, however many apps a process builds).
REQUEST_IDS = RequestIds()
os.register_at_fork(after_in_child=REQUEST_IDS.reset)
_REQUEST_ID_HEADER_NAME = REQUEST_ID_HEADER.lower().encode()  # ASGI: lower-case bytes


class RequestObserver:
    """Request id in (X-Request-Id or a new one) and out; one access line; HTTP metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or REQUEST_IDS.next()
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
                headers.append((_REQUEST_ID_HEADER_NAME, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.count_request(scope, status)
            # The path is percent-decoded: %0d%0a in the URL is a CR LF here.
            path = printable(scope["path"])
            access_log.info(
                "%s %s -> %d (%.1f ms)",
                scope["method"], path, status, (time.perf_counter() - started) * 1000,
                extra={"method": scope["method"], "path": path, "status": status},
            )  # fmt: skip
            scope_var.reset(scope_token)
            request_id_var.reset(request_token)
