"""Bounded polling: the benchmarks wait for work to finish, but never for ever."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def poll_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = ...,
    *,
    within: float,
    interval: float,
) -> T: ...


@overload
async def poll_until(
    probe: Callable[[], T],
    done: Callable[[T], object] = ...,
    *,
    within: float,
    interval: float,
) -> T: ...


async def poll_until(
    probe: Callable[[], Any],
    done: Callable[[Any], object] = bool,
    *,
    within: float,
    interval: float,
) -> Any:
    """Read `probe` every `interval` s until `done(reading)` holds or `within` s passed;
    returns the last reading either way (the caller reports how far the work got)."""
    deadline = time.monotonic() + within
    while True:
        outcome = probe()
        reading = await outcome if inspect.isawaitable(outcome) else outcome
        if done(reading) or time.monotonic() >= deadline:
            return reading
        await asyncio.sleep(interval)
