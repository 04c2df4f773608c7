"""The process's liveness lock: how other processes learn at once that this one is gone.

A worker process holds a session-level advisory lock on `owner_lock_key(owner)` on a
connection of its own for as long as it lives. PostgreSQL frees the lock when that
connection ends, which is when the process is killed, runs out of memory or loses its
machine, so a claim elsewhere can take its tasks over at once instead of waiting for
their leases to run out (see the SQL function `lease_is_dead`, migration 0006, for the
rule and why it is safe).

The lock connection can also drop while the process lives on. Then the process may have
lost its tasks already, so when it reconnects to the same server it takes a new owner
name: its running stages notice at their next renewal or write that the tasks are no
longer theirs and stop, and the tasks under the old name stay free for anyone to claim.
When the server itself restarted or a standby was promoted (a new server identity, the
SQL function `server_identity`), every lock was dropped at once and leases stamped before
are judged by the clock alone, so the process keeps its name and its tasks. Until the
lock is held, claims by this process find nothing (the claim checks the lock in the same
statement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from app.db.faults import describe
from app.db.queries import queries
from app.db.sessions import SessionOptions, connect
from app.retry import Backoff, retrying

log = logging.getLogger(__name__)


class ReadOnlyServer(Exception):
    """Connected to a standby: the lock must be held where claims run."""


WATCH_INTERVAL_SECONDS = 1.0
WATCH_TIMEOUT_SECONDS = 5.0


class OwnerLock:
    """Holds `owner`'s liveness lock on a dedicated connection, reconnecting with backoff."""

    def __init__(
        self,
        dsn: str,
        *,
        owner: str,
        new_owner: Callable[[], str],
        on_renamed: Callable[[str], None],
        on_held: Callable[[], None],
        application_name: str = "task-manager",
        max_backoff: float = 5.0,
        options: SessionOptions | None = None,
    ) -> None:
        self.owner = owner
        self._dsn = dsn
        self._options = options or SessionOptions()
        self._new_owner = new_owner
        self._on_renamed = on_renamed
        self._on_held = on_held
        self._application_name = application_name
        self._backoff = Backoff(base=0.1, cap=max_backoff)
        # The server (`server_identity()`) the lock was last held on.
        self._server: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.held = asyncio.Event()
        self.backend_pid: int | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="liveness-lock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            # Returns when a held lock's connection ends (reconnect at once, the backoff
            # starts afresh); connecting or taking the lock is retried with backoff.
            await retrying(self._backoff, log=log, message="liveness lock: not held")(self._hold)

    async def _hold(self) -> None:
        """Connect, take the lock and hold it until the connection ends."""
        connection = await connect(
            self._dsn, self._options, application_name=f"{self._application_name}/liveness"
        )
        try:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _, lost=lost: lost.set())
            await self._take(connection)
            self.held.set()
            self._on_held()
            try:
                await self._watch(connection, lost)
            except Exception as error:  # the watch query failed: the connection is gone
                log.warning("liveness lock: lost (%s)", describe(error))
            log.warning("liveness lock: connection lost; %s stops claiming", self.owner)
        finally:
            self.held.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)

    async def _take(self, connection: Any) -> None:
        statements = queries("queue")
        server: str | None = await statements.server_identity.fetchval(connection)
        if server is None:
            raise ReadOnlyServer("the server is in recovery: claims go to the primary")
        if self._server is not None and server == self._server:
            # The lock was free while this server ran on: our tasks may be someone else's.
            self._rename("the liveness lock was lost while the database ran on")
        self._server = server
        while not await statements.try_owner_lock.fetchval(connection, owner=self.owner):
            # Our previous lock session has not ended on the server yet (a half-open
            # connection); a new name is as safe and does not wait for it.
            self._rename("the previous liveness lock is still held")
        self.backend_pid = connection.get_server_pid()
        log.info("liveness lock held for %s", self.owner)

    def _rename(self, why: str) -> None:
        previous, self.owner = self.owner, self._new_owner()
        log.warning("%s: tasks held as %s are given up; now %s", why, previous, self.owner)
        self._on_renamed(self.owner)

    async def _watch(self, connection: Any, lost: asyncio.Event) -> None:
        """Return when the connection ends; a half-open one is caught by a cheap query."""
        while not lost.is_set() and not connection.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=WATCH_INTERVAL_SECONDS)
            if lost.is_set():
                return
            if await asyncio.wait_for(
                connection.fetchval("SELECT pg_is_in_recovery()"), timeout=WATCH_TIMEOUT_SECONDS
            ):
                # A demoted primary: claims made on the new one must see this lock there.
                log.warning("liveness lock: the server is read-only now; reconnecting")
                return
