"""Waking idle workers: on a NOTIFY of a new task, a retry falling due, or shutdown."""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """A broadcast signal: `notify()` wakes every worker waiting at that moment."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        # Later waiters wait for the next notify, not this one.
        self._event = asyncio.Event()

    def notify_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, delay), self.notify)

    async def wait(self, at_most: float) -> None:
        """Return on the next notify, or after `at_most` seconds."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, at_most))
