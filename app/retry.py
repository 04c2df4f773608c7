"""The service's one retry policy: exponential backoff with jitter, base and cap.

Every loop that waits out a fault uses it: the pipeline's database writes, a worker
after an error, the LISTEN connection, the event hub's reader and the liveness lock.
tenacity runs those loops (attempt counting, when to stop, which errors to retry, the
sleep, the log line before it); `Backoff` is the wait between attempts. Calls on a hot
path go through `LazyRetrying`, which makes the first attempt itself and hands a failure
to the same tenacity loop. The retry of a failed *stage* does not sleep in a loop: the
task is released with a not-before time computed by `Backoff.delay`, the same formula as
a pure function, so any worker (of any process) takes it up when it falls due.

Half of each step is fixed and half random ("equal jitter"): many tasks or processes
that failed together do not retry in lockstep, and no wait is shorter than half the
step, so a fault that lasts does not get hammered.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypedDict, TypeVar, Unpack

import tenacity
from tenacity import AsyncRetrying, RetryCallState

from app.db.faults import describe as describe_database_error
from app.db.faults import is_database_error

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Wait `base`·2ⁿ⁻¹ seconds before try n + 1, at most `cap`, half of it random."""

    base: float
    cap: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempt`-th failure (1 for the first)."""
        step: float = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return step / 2 + (rng or random).uniform(0, step / 2)

    def __call__(self, retry_state: RetryCallState) -> float:
        """tenacity's wait strategy."""
        return self.delay(retry_state.attempt_number)


def retrying(
    backoff: Backoff,
    *,
    log: logging.Logger,
    message: str,
    retry_if: Callable[[BaseException], bool] = lambda _: True,
    stop: tenacity.stop.stop_base | Callable[[RetryCallState], bool] = tenacity.stop_never,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    traceback: bool = False,
    describe: Callable[[BaseException], str] | None = None,
) -> AsyncRetrying:
    """Retry an async call under `backoff` until it succeeds or `stop` says so.

    Errors `retry_if` rejects, and the last one once `stop` holds, are raised as they
    are. Before each sleep one warning is logged: `message`, the error, the pause.
    Cancellation is never retried: it is not an `Exception`.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s (%s); retrying in %.1fs",
            message,
            "no error" if error is None else (describe or _describe)(error),
            pause,
            exc_info=error if traceback and error is not None else None,
        )

    options: dict[str, object] = {}
    if sleep is not None:
        options["sleep"] = sleep
    return AsyncRetrying(
        wait=backoff,
        stop=stop,
        retry=tenacity.retry_if_exception(
            lambda error: isinstance(error, Exception) and retry_if(error)
        ),
        before_sleep=before_sleep,
        reraise=True,
        **options,  # type: ignore[arg-type]
    )


class RetryOptions(TypedDict, total=False):
    """`retrying`'s optional settings, for `LazyRetrying` to pass on."""

    retry_if: Callable[[BaseException], bool]
    stop: tenacity.stop.stop_base | Callable[[RetryCallState], bool]
    sleep: Callable[[float], Awaitable[object]] | None
    traceback: bool
    describe: Callable[[BaseException], str] | None


class LazyRetrying:
    """`retrying` for a call on a hot path: the first attempt is made directly.

    Building tenacity's loop costs more than the call it wraps when that nearly always
    succeeds, so it is built only after a failure, which it then judges as its attempt 1:
    the same `retry_if`, `stop`, log line and waits as `retrying` alone would give.
    """

    __slots__ = ("_loop",)

    def __init__(
        self,
        backoff: Backoff,
        *,
        log: logging.Logger,
        message: str,
        **options: Unpack[RetryOptions],
    ) -> None:
        self._loop = functools.partial(retrying, backoff, log=log, message=message, **options)

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except Exception as error:
            failure = error
        # Outside the `except`: errors of later attempts are not chained to this one.
        # A fresh loop per failure: tenacity keeps per-loop state, and calls run concurrently.
        result: T = await self._loop()(_failed_once(failure, call))
        return result


def _failed_once(
    failure: Exception, call: Callable[[], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    """`call`, whose first attempt (made already) raises `failure` again for tenacity."""
    pending = [failure]

    async def attempt() -> T:
        if pending:
            raise pending.pop()
        return await call()

    return attempt


def _describe(error: BaseException) -> str:
    if is_database_error(error):
        # The driver's and the server's messages may quote the statement's values.
        return describe_database_error(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
