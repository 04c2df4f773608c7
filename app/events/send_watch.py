"""The send timeout of every stream, kept by one loop rather than a timer per send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.types import Message, Send


class SendWatch:
    """Expires the deadline of a stream whose send waited longer than `timeout_seconds`.

    A send waits only while the client's socket buffers are full. Streams note when a
    send began, and one loop looks every quarter timeout: a stalled send ends between 1
    and 1.25 times the timeout. The stream's own `asyncio.timeout` scope does the ending,
    so the stream sees a `TimeoutError` of its own.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._sending: dict[asyncio.Timeout, float] = {}
        # Sends are timed on the clock `run` compares them with: the loop's, once it runs.
        self._clock: Callable[[], float] = time.monotonic

    async def send(self, deadline: asyncio.Timeout, send: Send, message: Message) -> None:
        """One send, within `deadline` (an entered `asyncio.timeout(None)` of the stream)."""
        self._sending[deadline] = self._clock()
        try:
            await send(message)
        finally:
            del self._sending[deadline]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        while True:
            await asyncio.sleep(self.timeout_seconds / 4)
            too_old = loop.time() - self.timeout_seconds
            for deadline, since in list(self._sending.items()):
                if since <= too_old and deadline.when() is None:
                    deadline.reschedule(loop.time())
