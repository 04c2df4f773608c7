"""Synchronising on conditions with a deadline, never on bare sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = ...,
    interval: float = ...,
    message: str = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T | None],
    *,
    within: float = ...,
    interval: float = ...,
    message: str = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    *,
    within: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll `probe` until it returns something truthy; fail after `within` seconds.

    `probe` may be a coroutine function or a plain one (e.g. a lambda reading a counter);
    either way the event loop keeps running between polls.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        outcome = probe()
        last = await outcome if inspect.isawaitable(outcome) else outcome
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {message} (last: {last!r})")


def eventually_sync(
    probe: Callable[[], T | None],
    *,
    within: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {message} (last: {last!r})")
