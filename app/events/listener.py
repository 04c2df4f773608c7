"""The one dedicated LISTEN connection of a process, reconnecting with backoff.

Both the event hub (SSE followers) and the workers (new tasks) hang off it, so a
process holds exactly one connection for notifications, however many followers it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Literal

from app.db.history import EVENTS_CHANNEL, parse_notification
from app.db.sessions import SessionOptions, connect
from app.retry import Backoff, retrying

log = logging.getLogger(__name__)

NotificationHandler = Callable[[uuid.UUID, int], None]
ReconnectHandler = Callable[[], None]
ListenerState = Literal["connecting", "connected", "reconnecting", "stopped"]


class TaskEventListener:
    """LISTENs on the task events channel and calls its handlers for each notification."""

    def __init__(
        self,
        dsn: str,
        *,
        max_backoff: float = 5.0,
        application_name: str = "task-manager",
        options: SessionOptions | None = None,
    ) -> None:
        self._dsn = dsn
        self._options = options or SessionOptions()
        self._backoff = Backoff(base=0.1, cap=max_backoff)
        self._application_name = application_name
        self._on_notification: list[NotificationHandler] = []
        self._on_reconnect: list[ReconnectHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._ever_connected = False
        self.connected = asyncio.Event()
        self.backend_pid: int | None = None

    @property
    def state(self) -> ListenerState:
        """For readiness: `stopped` means no new transitions reach this process's streams."""
        if self._task is None or self._task.done():
            return "stopped"
        if self.connected.is_set():
            return "connected"
        return "reconnecting" if self._ever_connected else "connecting"

    def on_notification(self, handler: NotificationHandler) -> None:
        self._on_notification.append(handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Called after every connection that followed a failed attempt or a lost one.

        Notifications sent meanwhile are lost, including before a first connection that
        only succeeded at a later attempt: followers may have subscribed in between.
        """
        self._on_reconnect.append(handler)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="task-event-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _run(self) -> None:
        """Connect, wait for the loss, reconnect: for as long as the process runs.

        Any error (asyncpg raises `InterfaceError`, not a `PostgresError`, for a connection
        closed under it) is logged and retried with backoff; only cancellation ends this.
        """
        missed = False  # notifications may have been lost: re-read after connecting
        while True:
            async for attempt in retrying(
                self._backoff, log=log, message="LISTEN connection failed"
            ):
                with attempt:
                    await self._connect_or_close()
            # After a failed first attempt, followers may have subscribed meanwhile.
            missed = missed or attempt.retry_state.attempt_number > 1
            self._ever_connected = True
            if missed:
                log.info("LISTEN connection established after a failure or loss")
                for handler in self._on_reconnect:
                    _call_safely(handler)
            missed = True
            await self._lost.wait()
            self.connected.clear()
            log.warning("LISTEN connection lost; reconnecting")
            await self._close()

    async def _connect_or_close(self) -> None:
        try:
            await self._connect()
        except Exception:
            await self._close()
            raise

    async def _connect(self) -> None:
        # This connection's own event: a late signal from an earlier one changes nothing.
        lost = self._lost = asyncio.Event()
        connection = await connect(
            self._dsn, self._options, application_name=f"{self._application_name}/listen"
        )
        self._connection = connection  # closed by `_close` should the rest fail
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(EVENTS_CHANNEL, self._dispatch)
        self.backend_pid = connection.get_server_pid()
        self.connected.set()
        # A half-open TCP connection never reports its end; a cheap periodic query does.
        self._watchdog = asyncio.create_task(self._watch(connection, lost))

    async def _watch(self, connection: Any, lost: asyncio.Event) -> None:
        while not connection.is_closed():
            await asyncio.sleep(2.0)
            try:
                # A server in recovery is a demoted primary: NOTIFYs come from the new one.
                if await asyncio.wait_for(
                    connection.fetchval("SELECT pg_is_in_recovery()"), timeout=5
                ):
                    log.warning("LISTEN server is read-only now; reconnecting")
                    break
            except Exception:
                break
        lost.set()

    def _dispatch(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        parsed = parse_notification(payload)
        if parsed is None:
            log.warning("ignoring malformed notification %r", payload)
            return
        for handler in self._on_notification:
            _call_safely(handler, *parsed)

    async def _close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)


def _call_safely(handler: Callable[..., None], *args: Any) -> None:
    try:
        handler(*args)
    except Exception:
        log.exception("notification handler failed")
