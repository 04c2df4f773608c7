"""A circuit breaker per receiver host, in this process's memory.

After `failures` consecutive failed attempts (timeouts, connection errors, 5xx) to one
host, the host is open: the claim leaves its deliveries alone, so they are neither
attempted nor charged an attempt. When the cool-down has passed the host is half-open:
one delivery is claimed as a probe. A probe that gets an answer closes the breaker; one
that fails opens it again for twice the cool-down, up to `max_cooldown`.

The state is per process: each sending process learns on its own that a host is down,
at the cost of `failures` attempts each. It needs no table, no write per attempt, and a
restart forgets it (the next attempts find out again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Outcomes that say the host is unwell. An answer, even a 4xx or a redirect, says the
# host is up and taking requests; "refused" is the policy's verdict, not the host's.
FAILURES = frozenset({"timeout", "connection_error", "server_error"})
SUCCESSES = frozenset({"delivered", "gone", "redirect", "rejected"})


@dataclass
class _Host:
    failures: int = 0
    cooldown: float = 0.0  # of the current or last opening; 0 while never opened
    open_until: float | None = None  # clock time; None: closed
    probing: bool = False


class ReceiverBreakers:
    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        max_cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self.clock = clock
        self.on_change = on_change  # told the number of open hosts after every change
        self._hosts: dict[str, _Host] = {}

    @property
    def open_count(self) -> int:
        """Hosts not closed: waiting out their cool-down or on their probe."""
        return sum(1 for state in self._hosts.values() if state.open_until is not None)

    def room(self, host: str, free: int) -> int:
        """How many deliveries to `host` may be claimed now, given `free` per-host slots."""
        state = self._hosts.get(host)
        if state is None or state.open_until is None:
            return free
        if state.probing or self.clock() < state.open_until:
            return 0
        return min(free, 1)  # half-open: one probe

    def blocked(self) -> list[str]:
        """Hosts whose deliveries may not be claimed now."""
        return [host for host in self._hosts if self.room(host, 1) == 0]

    def next_probe_in(self) -> float | None:
        """Seconds until the soonest cool-down ends (None: none is running)."""
        now = self.clock()
        waits = [
            state.open_until - now
            for state in self._hosts.values()
            if state.open_until is not None and not state.probing and state.open_until > now
        ]
        return min(waits) if waits else None

    def claimed(self, host: str) -> None:
        """A delivery to `host` was claimed: if the host is half-open, it is the probe."""
        state = self._hosts.get(host)
        if state is not None and state.open_until is not None:
            state.probing = True

    def record(self, host: str, outcome: str | None) -> bool:
        """An attempt to `host` ended with `outcome` (None: it never finished). True when
        this closed the host's breaker: its deliveries may be claimed again."""
        state = self._hosts.get(host)
        if outcome in SUCCESSES:
            if state is not None:
                del self._hosts[host]
                if state.open_until is not None:
                    log.info("webhook receiver %s answers again: breaker closed", host)
                    self._changed()
                    return True
            return False
        if outcome not in FAILURES:
            if state is not None:
                state.probing = False  # no verdict: the next claim probes again
            return False
        if state is None:
            state = self._hosts[host] = _Host()
        state.failures += 1
        if state.open_until is not None:
            if state.probing:  # the probe failed
                state.probing = False
                state.cooldown = min(state.cooldown * 2, self.max_cooldown)
                state.open_until = self.clock() + state.cooldown
                log.debug("webhook receiver %s: probe failed, next in %gs", host, state.cooldown)
            return False
        if state.failures >= self.failures:
            state.cooldown = self.cooldown
            state.open_until = self.clock() + state.cooldown
            log.warning(
                "webhook receiver %s: %d failures in a row, breaker open: nothing is sent "
                "to it until a probe in %gs or later succeeds",
                host, state.failures, state.cooldown,
            )  # fmt: skip
            self._changed()
        return False

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.open_count)
