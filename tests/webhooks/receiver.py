"""A webhook receiver on loopback that checks every delivery as a third party would.

Signatures are verified with the `standardwebhooks` reference library, never with the
service's own code. The receiver can be down (nothing listens on its port) and come up
on the same port, answer from a script (a status, a hang, a trickled or huge body, a
redirect to itself), and it records every request, verified or not, and any two
requests of one `webhook-id` that overlapped in time.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.config import check_webhook_secrets
from app.webhooks.secrets import receiver_key, secret_text
from tests.fakes import unused_port
from tests.waiting import eventually_sync

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes of base64
OTHER_SECRET = "whsec_" + "c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24h"


def derived_secret(master_secret: str, url: str) -> str:
    """The `whsec_` secret the operator's command line prints for `url`'s origin."""
    [master_key] = check_webhook_secrets(master_secret)
    return secret_text(receiver_key(master_key, url))


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    verified: bool
    started: float
    finished: float | None
    answered: int | str
    traceparent: str | None = None  # the W3C trace context header, when one was sent


class Receiver:
    """Script entries: an int status, "hang", "trickle", "huge", "redirect"."""

    def __init__(self, secret: str = SECRET) -> None:
        """`secret` is the service's master secret; the receiver verifies with its own,
        derived for its origin, as the operator would hand it over."""
        self.port = unused_port()
        self.secret = derived_secret(secret, self.url)
        self.verifier = Webhook(self.secret)
        self.script: deque[int | str] = deque()
        self.per_id_failures = 0  # answer 500 to the first N attempts of every id
        self.latency = 0.0
        self.received: list[Received] = []
        self.overlaps: list[str] = []
        self._in_flight: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    # --- the ASGI app ------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        headers = dict(request.headers.items())
        webhook_id = headers.get("webhook-id", "")
        started = time.monotonic()
        try:
            self.verifier.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self._lock:
            self._in_flight[webhook_id] += 1
            if self._in_flight[webhook_id] > 1:
                self.overlaps.append(webhook_id)
            self._seen[webhook_id] += 1
            attempt = self._seen[webhook_id]
            action: int | str = self.script.popleft() if self.script else 200
            if verified and action == 200 and attempt <= self.per_id_failures:
                action = 500
            if not verified:
                action = 400
            # Recorded on arrival: a request whose sender dies never finishes.
            record = Received(
                webhook_id=webhook_id,
                timestamp=headers.get("webhook-timestamp", ""),
                signature=headers.get("webhook-signature", ""),
                body=body,
                verified=verified,
                started=started,
                finished=None,
                answered=action,
                traceparent=headers.get("traceparent"),
            )
            self.received.append(record)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            response = await self._answer(action)
            await response(scope, receive, send)
        finally:
            with self._lock:
                self._in_flight[webhook_id] -= 1
                record.finished = time.monotonic()

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight.total()

    async def _answer(self, action: int | str) -> Response:
        if action == "hang":
            await asyncio.sleep(3600)
        if action == "trickle":
            return StreamingResponse(_trickle(), media_type="text/plain")
        if action == "huge":
            return StreamingResponse(_huge(), media_type="application/octet-stream")
        if action == "redirect":
            return Response(status_code=302, headers={"location": self.url})
        assert isinstance(action, int)
        return Response(b"ok", status_code=action)

    # --- what arrived ------------------------------------------------------------------
    def accepted(self) -> list[Received]:
        """Verified deliveries the receiver answered 2xx."""
        with self._lock:
            return [r for r in self.received if r.verified and r.answered == 200]

    def accepted_ids(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.accepted())

    def attempts_of(self, webhook_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.webhook_id == webhook_id]

    # --- up and down -------------------------------------------------------------------
    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        server = uvicorn.Server(
            uvicorn.Config(self, log_level="warning", timeout_graceful_shutdown=1)
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        eventually_sync(lambda: server.started, within=30, message="the receiver to start")
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None


async def _trickle() -> AsyncIterator[bytes]:
    for _ in range(600):
        yield b"."
        await asyncio.sleep(0.1)


async def _huge() -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(16 * 1024):  # a GiB, should anyone read it all
        yield chunk


@contextmanager
def running_receiver(**options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
