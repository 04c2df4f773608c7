"""The workers of one process: N coroutines that claim tasks and run them, plus retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from app.config import Settings
from app.db.engine import Database
from app.db.url import asyncpg_dsn
from app.metrics import Metrics
from app.pipeline import queue
from app.pipeline.clients import StageClients
from app.pipeline.liveness import OwnerLock
from app.pipeline.runner import TaskRunner
from app.pipeline.wakeup import Wakeup
from app.retry import Backoff, LazyRetrying
from app.tracing import NO_SPANS, Spans

log = logging.getLogger(__name__)

RETENTION_INTERVAL_SECONDS = 600.0
# A worker that hit an error starts again after about this, doubling up to the poll interval.
ERROR_PAUSE_SECONDS = 0.2
# Handing back the leases at the end must not hold up the exit when the database is away.
HAND_BACK_SECONDS = 2.0


def lease_owner_name() -> str:
    """Unique per process and readable in `tasks.lease_owner` when debugging."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class WorkerPool:
    """Starts, wakes and stops the workers; the lifespan owns one per process."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        clients: StageClients,
        metrics: Metrics,
        *,
        owner: str | None = None,
        spans: Spans = NO_SPANS,
    ) -> None:
        self.settings = settings
        self.spans = spans
        self.database = database
        self.owner = owner or lease_owner_name()
        self.wakeup = Wakeup()
        self._stopping = False
        self._stopped: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._housekeeping: asyncio.Task[None] | None = None
        self.runner = TaskRunner(
            settings,
            database,
            clients,
            owner=self.owner,
            schedule_wakeup=self.wakeup.notify_later,
            is_stopping=lambda: self._stopping,
            metrics=metrics,
            spans=spans,
        )
        self.held = 0  # tasks this process's workers hold right now
        self.liveness = OwnerLock(
            asyncpg_dsn(database.url),
            owner=self.owner,
            new_owner=lease_owner_name,
            on_renamed=self._renamed,
            on_held=self.wakeup.notify,  # claims found nothing while the lock was away
            application_name=settings.service_name,
            options=database.options,
        )

    def start(self) -> None:
        if self.settings.worker_concurrency > 0:
            self.liveness.start()
        for number in range(self.settings.worker_concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"worker-{number}"))
        # Always on: with a retention of 0 the pipeline deletes audio as tasks end, and the
        # purge still clears what tasks ended by other paths (or under a longer retention) kept.
        self._housekeeping = asyncio.create_task(self._purge_audio(), name="audio-retention")
        log.info("%d workers started as %s", len(self._workers), self.owner)

    def on_task_event(self, _task_id: uuid.UUID, seq: int) -> None:
        """Listener hook: the first event of a task means a new task to work on."""
        if seq == 1:
            self.wakeup.notify()

    def on_reconnect(self) -> None:
        # Creations may have been missed while the listener was away.
        self.wakeup.notify()

    @property
    def configured(self) -> int:
        return self.settings.worker_concurrency

    @property
    def running(self) -> int:
        """Workers still running; fewer than `configured` only after a fault or at shutdown."""
        return sum(1 for worker in self._workers if not worker.done())

    @property
    def stopping(self) -> bool:
        return self._stopping

    def begin_stop(self) -> None:
        """Stop claiming now, and start the grace period of running stages.

        Called at the stop signal, while uvicorn still drains requests, so the grace
        period runs alongside the drain instead of after it; safe to call twice.
        """
        if self._stopped is not None:
            return
        self._stopping = True
        self.wakeup.notify()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        self._stopped = asyncio.create_task(self._stop(), name="workers-stop")

    async def stop(self) -> None:
        """Stop claiming, let running stages finish within the grace period, hand back the rest."""
        self.begin_stop()
        assert self._stopped is not None
        await self._stopped

    async def _stop(self) -> None:
        if self._workers:
            _, unfinished = await asyncio.wait(
                self._workers, timeout=self.settings.shutdown_grace_seconds
            )
            for worker in unfinished:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        try:
            async with asyncio.timeout(HAND_BACK_SECONDS):
                async with self.database.driver() as connection:
                    released = await queue.release_all_leases(connection, owner=self.owner)
            if released:
                log.info("handed back %d unfinished task(s) for another process", released)
        except Exception:  # the leases expire on their own; another process resumes then
            log.warning("could not hand back the tasks still held", exc_info=True)
        await self.liveness.stop()

    def _renamed(self, owner: str) -> None:
        self.owner = owner
        self.runner.rename(owner)

    async def _work(self) -> None:
        """Claim and run tasks until stopped; no error ends a worker, only cancellation."""
        rounds = LazyRetrying(
            Backoff(base=ERROR_PAUSE_SECONDS, cap=self.settings.worker_poll_seconds),
            log=log,
            message="worker error; going on",
            stop=lambda _: self._stopping,
            sleep=self.wakeup.wait,  # a stop or a new task ends the pause early
            traceback=True,
        )
        while not self._stopping:
            try:
                # A round (a task or an idle wait) that fails is repeated under the
                # backoff until one succeeds.
                await rounds(self._claim_and_run)
            except Exception:  # raised only once stopping: nothing is retried any more
                log.warning("worker error while stopping", exc_info=True)

    async def _claim_and_run(self) -> None:
        if self._stopping:  # woken from an error's pause by the stop
            return
        claimed_at = time.time_ns()
        held = await self.runner.claim()
        if held is None:
            await self._idle()
            return
        # A sibling that found this task's user being claimed passed the user over and went
        # idle (claims skip a locked user, see `queue`): let it look again.
        self.wakeup.notify()
        self.held += 1
        try:
            # A span only for a claim that got a task: an idle poll traces nothing of its own.
            attributes = {
                "task.id": str(held.id),
                "task.status": held.status.value,
                "task.claim_count": held.claim_count,
            }
            with self.spans.span("claim", attributes, start_ns=claimed_at):
                await self.runner.run(held)
        finally:
            self.held -= 1

    async def _idle(self) -> None:
        """Sleep until woken, until the next retry falls due, or the poll interval passes."""
        timeout = self.settings.worker_poll_seconds
        with contextlib.suppress(Exception):
            async with self.database.driver() as connection:
                due = await queue.seconds_until_next_due(connection)
            if due is not None:
                timeout = min(timeout, max(due, 0.05))
        if not self._stopping:
            await self.wakeup.wait(timeout)

    async def _purge_audio(self) -> None:
        hours = self.settings.audio_retention_hours
        interval = min(RETENTION_INTERVAL_SECONDS, hours * 3600 / 4) or RETENTION_INTERVAL_SECONDS
        while True:
            try:
                async with self.database.driver() as connection:
                    purged = await queue.purge_expired_audio(connection, older_than_hours=hours)
                if purged:
                    log.info("retention: purged the audio of %d finished task(s)", purged)
            except Exception:
                log.warning("retention purge failed", exc_info=True)
            await asyncio.sleep(interval)
