"""Exponential backoff with jitter, so retries of many tasks do not arrive in lockstep."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before try `attempt + 1`: half the exponential step fixed, half random."""
    step: float = min(cap, base * 2 ** max(0, attempt - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)
