"""The test helpers themselves: waiting on conditions, and fakes that start each test clean."""

from __future__ import annotations

import itertools

import pytest

from tests.fakes import FakeStage
from tests.waiting import eventually


async def test_eventually_takes_plain_and_async_probes() -> None:
    counter = itertools.count()

    async def async_probe() -> bool:
        return next(counter) >= 3

    assert await eventually(lambda: next(counter) >= 2, within=5, interval=0.001)
    assert await eventually(async_probe, within=5, interval=0.001)


async def test_eventually_fails_with_the_last_value_after_the_deadline() -> None:
    with pytest.raises(AssertionError, match=r"waiting for nothing \(last: 0\)"):
        await eventually(lambda: 0, within=0.05, interval=0.01, message="nothing")


def test_a_fake_stage_reset_restores_every_tunable() -> None:
    stage = FakeStage("transcribing")
    stage.detail = "Model not loaded"
    stage.hang_seconds = 0.1
    stage.latency = 2.0
    stage.always = 503

    stage.reset()

    assert stage.detail == FakeStage.DETAIL
    assert stage.hang_seconds == FakeStage.HANG_SECONDS
    assert stage.latency == 0.0
    assert stage.always is None
