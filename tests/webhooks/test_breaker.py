"""The per-host circuit breaker on its own, with a clock the test moves."""

from __future__ import annotations

from app.webhooks.breaker import ReceiverBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breakers(clock: Clock, changes: list[int]) -> ReceiverBreakers:
    return ReceiverBreakers(
        failures=3, cooldown=10.0, max_cooldown=25.0, clock=clock, on_change=changes.append
    )


def test_k_failures_in_a_row_open_it_and_an_answer_in_between_resets_the_count() -> None:
    clock, changes = Clock(), list[int]()
    b = breakers(clock, changes)
    for outcome in ("timeout", "connection_error", "rejected", "server_error", "timeout"):
        b.record("a:1", outcome)  # a 4xx is an answer: the host is up
    assert b.room("a:1", 2) == 2
    b.record("a:1", "refused")  # the policy's verdict: neither way
    assert b.room("a:1", 2) == 2
    b.record("a:1", "timeout")
    assert b.room("a:1", 2) == 0
    assert b.blocked() == ["a:1"]
    assert b.room("b:1", 2) == 2  # other hosts are not concerned
    assert changes == [1]


def test_half_open_allows_one_probe_whose_success_closes_it() -> None:
    clock, changes = Clock(), list[int]()
    b = breakers(clock, changes)
    for _ in range(3):
        b.record("a:1", "timeout")
    clock.now = 9.9
    assert b.room("a:1", 2) == 0
    assert b.next_probe_in() is not None
    clock.now = 10.0
    assert b.room("a:1", 2) == 1
    b.claimed("a:1")
    assert b.room("a:1", 2) == 0  # the probe is out
    assert b.record("a:1", "delivered") is True
    assert b.room("a:1", 2) == 2
    assert b.open_count == 0
    assert changes == [1, 0]


def test_a_failed_probe_doubles_the_cool_down_up_to_the_cap() -> None:
    clock, changes = Clock(), list[int]()
    b = breakers(clock, changes)
    for _ in range(3):
        b.record("a:1", "timeout")
    waits = []
    for _ in range(3):
        clock.now += b.next_probe_in() or 0.0
        waits.append(clock.now)
        assert b.room("a:1", 2) == 1
        b.claimed("a:1")
        b.record("a:1", "timeout")
    assert waits == [10.0, 30.0, 55.0]  # 10, then 20, then 25 (the cap)
    assert changes == [1]  # logged and counted once while it stays open


def test_a_probe_that_never_finished_lets_the_next_claim_probe_again() -> None:
    clock, changes = Clock(), list[int]()
    b = breakers(clock, changes)
    for _ in range(3):
        b.record("a:1", "timeout")
    clock.now = 10.0
    b.claimed("a:1")
    b.record("a:1", None)  # cancelled, or the task was deleted
    assert b.room("a:1", 2) == 1
