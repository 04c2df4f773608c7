"""The one retry policy: its waits, and the loops tenacity runs with it."""

from __future__ import annotations

import logging
import random

import asyncpg
import pytest
from tenacity import AsyncRetrying

import app.retry
from app.retry import Backoff, LazyRetrying, retrying

log = logging.getLogger("tests.retry")


def test_each_wait_is_half_fixed_half_random_and_capped() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    rng = random.Random(7)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(step / 2 <= wait <= step for wait in waits)
        assert max(waits) - min(waits) > step / 4  # jittered, not lockstep


async def test_a_failing_call_is_retried_until_it_succeeds() -> None:
    calls: list[float] = []
    pauses: list[float] = []

    async def flaky() -> str:
        calls.append(0)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    async def record(pause: float) -> None:
        pauses.append(pause)

    policy = retrying(Backoff(base=0.1, cap=0.4), log=log, message="flaky", sleep=record)

    assert await policy(flaky) == "up"
    assert len(calls) == 3
    assert 0.05 <= pauses[0] <= 0.1
    assert 0.1 <= pauses[1] <= 0.2


async def test_an_error_it_does_not_retry_and_the_last_one_are_raised_as_they_are() -> None:
    async def broken() -> None:
        raise KeyError("bug")

    async def no_sleep(_: float) -> None:
        return None

    not_retried = retrying(
        Backoff(base=0.1, cap=0.1),
        log=log,
        message="x",
        retry_if=lambda error: isinstance(error, ConnectionError),
        sleep=no_sleep,
    )
    with pytest.raises(KeyError):
        await not_retried(broken)

    attempts = 0

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    stopped = retrying(
        Backoff(base=0.1, cap=0.1),
        log=log,
        message="x",
        stop=lambda state: state.attempt_number >= 2,
        sleep=no_sleep,
    )
    with pytest.raises(ConnectionError):
        await stopped(down)
    assert attempts == 2


async def test_a_lazy_call_that_succeeds_builds_no_retry_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[object] = []

    def counting(*args: object, **kwargs: object) -> AsyncRetrying:
        built.append(args)
        return AsyncRetrying(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.retry, "AsyncRetrying", counting)
    policy = LazyRetrying(Backoff(base=0.1, cap=0.4), log=log, message="fine")

    async def fine() -> str:
        return "up"

    assert await policy(fine) == "up"
    assert built == []


async def test_a_lazy_call_that_fails_goes_on_as_the_loop_would(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    pauses: list[float] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("down")
        return "up"

    async def record(pause: float) -> None:
        pauses.append(pause)

    policy = LazyRetrying(Backoff(base=0.1, cap=0.4), log=log, message="flaky", sleep=record)

    with caplog.at_level(logging.WARNING, logger=log.name):
        assert await policy(flaky) == "up"
    assert calls == 3
    # The direct first attempt counts as the loop's first: the waits follow on from it.
    assert 0.05 <= pauses[0] <= 0.1
    assert 0.1 <= pauses[1] <= 0.2
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert all(
        message.startswith("flaky (ConnectionError: down); retrying in") for message in messages
    )


async def test_a_lazy_call_raises_what_it_does_not_retry_at_once() -> None:
    calls = 0
    bug = KeyError("bug")

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise bug

    async def no_sleep(_: float) -> None:
        raise AssertionError("nothing is retried")

    policy = LazyRetrying(
        Backoff(base=0.1, cap=0.1),
        log=log,
        message="x",
        retry_if=lambda error: isinstance(error, ConnectionError),
        sleep=no_sleep,
    )
    with pytest.raises(KeyError) as raised:
        await policy(broken)
    assert raised.value is bug
    assert calls == 1

    stopped = LazyRetrying(
        Backoff(base=0.1, cap=0.1), log=log, message="x", stop=lambda _: True, sleep=no_sleep
    )
    with pytest.raises(KeyError):
        await stopped(broken)
    assert calls == 2


async def test_a_database_error_is_logged_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0

    async def duplicate() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise asyncpg.UniqueViolationError("Key (title)=(Please call Stella) already exists")

    async def no_sleep(_: float) -> None:
        return None

    with caplog.at_level(logging.WARNING, logger=log.name):
        await retrying(Backoff(base=0.1, cap=0.1), log=log, message="x", sleep=no_sleep)(duplicate)
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("x (SQLSTATE 23505); retrying in")
    assert "Stella" not in message
