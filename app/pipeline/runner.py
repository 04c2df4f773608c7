"""Taking one claimed task through the stages that have no output yet.

The order of every step is what makes the pipeline resumable: a stage's output and
the status that follows it are committed together, so after a crash the next claim
starts at the first stage without output and never calls a finished stage again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import tenacity

from app.config import Settings
from app.db.engine import Database
from app.db.faults import describe, is_retryable_database_error
from app.db.status import STAGE_BY_STATUS, TaskStatus
from app.logs import stage_var, task_context
from app.metrics import Metrics
from app.pipeline import queue
from app.pipeline.clients import StageClients
from app.pipeline.errors import PermanentFailure, StageFailure, TransientFailure
from app.pipeline.queue import HeldTask
from app.retry import Backoff, LazyRetrying
from app.tracing import NO_SPANS, Spans

log = logging.getLogger(__name__)

T = TypeVar("T")

# A database write waits out a restart or a full pool: first pause 0.1–0.2 s, at most 2 s.
WRITE_BACKOFF = Backoff(base=0.2, cap=2.0)


class LeaseLost(Exception):
    """The task was deleted or taken over by another worker; stop without writing."""


class StopRequested(Exception):
    """The process is shutting down; the task is handed back between stages."""


class TaskRunner:
    """Runs held tasks for one worker process (`owner` names the lease holder)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        clients: StageClients,
        *,
        owner: str,
        schedule_wakeup: Callable[[float], None],
        is_stopping: Callable[[], bool],
        metrics: Metrics,
        spans: Spans = NO_SPANS,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.spans = spans
        self.database = database
        self.clients = clients
        self.owner = owner
        # The stage calls in flight: `rename` cancels them.
        self._calls: set[asyncio.Future[Any]] = set()
        self.schedule_wakeup = schedule_wakeup
        self.is_stopping = is_stopping
        # A retention of 0: the statement that ends a task also deletes its audio.
        self._drops_audio = settings.audio_retention_hours == 0
        self._write_retries = LazyRetrying(
            WRITE_BACKOFF,
            log=log,
            message="database unavailable; retrying the write",
            retry_if=is_retryable_database_error,
            describe=describe,
            stop=tenacity.stop_before_delay(settings.worker_lease_seconds),
        )

    def rename(self, owner: str) -> None:
        """Work as `owner` from now on; tasks held under the old name stop at once.

        Their next fenced write fails on `lease_owner`, and the stage calls in progress
        are cancelled here (their tasks stop as if the lease were lost).
        """
        self.owner = owner
        for call in self._calls:
            call.cancel()

    # ---------------------------------------------------------------- claiming

    async def claim(self) -> HeldTask | None:
        """Claim the next task, moved into its first unfinished stage by the claim itself."""
        async with self.database.driver() as connection:
            task = await queue.claim_next_task(
                connection,
                owner=self.owner,
                lease_seconds=self.settings.worker_lease_seconds,
                per_user=self.settings.max_active_tasks_per_user,
                max_claims=self.settings.pipeline_max_claims,
            )
        if task is None:
            return None
        claimed = task
        try:
            # After the claim committed: reading the audio does not hold up other claims.
            task = await self._write(lambda connection: queue.with_stage_audio(connection, claimed))
        except Exception:
            with contextlib.suppress(Exception):  # give it back rather than sit on it
                await self._write(
                    lambda connection: queue.release_lease(connection, claimed.id, owner=self.owner)
                )
            raise
        if task.claim_count >= self.settings.pipeline_max_claims:
            # So many holders vanished mid-task (crash, kill) that it will not finish.
            comment = f"abandoned after {task.claim_count} interrupted attempts"
            if await self._write(
                lambda connection: queue.fail_task(
                    connection,
                    task.id,
                    owner=self.owner,
                    comment=comment,
                    kind="abandoned",
                    drop_audio=self._drops_audio,
                )
            ):
                self._finished(task, TaskStatus.FAILED)
            return None
        return task

    # ------------------------------------------------------------------ stages

    async def run(self, held: HeldTask) -> None:
        """Take the task to its end, to a retry later, or hand it back; never raises.

        When even the outcome cannot be written (the database stays away longer than a
        lease, or refuses the write), the task is left to its lease: once that expires,
        a claim takes it over and counts the attempt as interrupted.
        """
        task_id = held.id
        with task_context(task_id, _stage_name(held.status)):
            try:
                await self._run_logged(held)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "task %s: could not record the outcome in %s; it is taken up again "
                    "when its lease expires",
                    task_id,
                    held.status,
                )

    async def _run_logged(self, held: HeldTask) -> None:
        task_id = held.id
        try:
            if self.is_stopping():
                raise StopRequested()  # claimed as the signal came: call no stage
            await self._run_stages(held)
        except LeaseLost:
            log.info("task %s: lease lost (deleted or taken over); stopping", task_id)
        except StopRequested:
            await self._write(
                lambda connection: queue.release_lease(connection, task_id, owner=self.owner)
            )
            log.info("task %s: handed back for shutdown in %s", task_id, held.status)
        except StageFailure as failure:
            await self._handle_failure(held, failure)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or a database outage: retry like a transient fault
            log.exception("task %s: unexpected error in %s", task_id, held.status)
            await self._handle_failure(
                held,
                TransientFailure(
                    f"internal error ({type(error).__name__})",
                    user_message="an internal error occurred",
                    kind="internal error",
                ),
            )

    async def _run_stages(self, held: HeldTask) -> None:
        if held.status is TaskStatus.PREPROCESSING:
            stage_var.set(_stage_name(held.status))
            if held.audio is None:
                raise PermanentFailure("the uploaded audio is gone")
            wav = await self._call(held, self.clients.preprocessing.preprocess(held.audio))
            await self._commit_stage(
                held,
                TaskStatus.TRANSCRIBING,
                lambda connection: queue.store_preprocessed_audio(
                    connection, held.id, owner=self.owner, wav=wav
                ),
            )
            held.audio, held.has_preprocessed_audio = wav, True
        if held.status is TaskStatus.TRANSCRIBING:
            stage_var.set(_stage_name(held.status))
            if held.audio is None:
                raise PermanentFailure("the preprocessed audio is gone")
            transcription = await self._call(held, self.clients.transcribing.transcribe(held.audio))
            await self._commit_stage(
                held,
                TaskStatus.EVALUATING,
                lambda connection: queue.store_transcription(
                    connection, held.id, owner=self.owner, transcription=transcription
                ),
            )
            held.result, held.audio = transcription, None
        if held.status is TaskStatus.EVALUATING:
            stage_var.set(_stage_name(held.status))
            assert held.result is not None
            assessment = await self._call(
                held, self.clients.feedback.assess(held.text_id, held.result)
            )
            completed = await self._write(
                lambda connection: queue.complete_task(
                    connection,
                    held.id,
                    owner=self.owner,
                    accuracy=assessment.accuracy,
                    mistakes=assessment.mistakes,
                    drop_audio=self._drops_audio,
                )
            )
            if not completed and not await self._already_moved(held, TaskStatus.COMPLETED):
                raise LeaseLost()
            self._finished(held, TaskStatus.COMPLETED)
            log.info("task %s: completed (accuracy %.1f)", held.id, assessment.accuracy)

    async def _commit_stage(
        self,
        held: HeldTask,
        next_status: TaskStatus,
        store: Callable[[asyncpg.Connection], Awaitable[bool]],
    ) -> None:
        """Store a stage's output and move to the next status, in one statement."""
        if not await self._write(store) and not await self._already_moved(held, next_status):
            raise LeaseLost()
        held.status, held.stage_attempts = next_status, 0
        if self.is_stopping():
            raise StopRequested()

    async def _already_moved(self, held: HeldTask, status: TaskStatus) -> bool:
        """Did an earlier try of a write that changed nothing commit after all?

        A write whose answer was lost is retried, and the retry, fenced by the stage,
        changes nothing; the task then already holds the write's outcome under our lease.
        """
        return await self._write(
            lambda connection: queue.moved_to(connection, held.id, owner=self.owner, status=status)
        )

    async def _call(self, task: HeldTask, call: Coroutine[Any, Any, T]) -> T:
        """Await a stage call while renewing the lease every third of its length; cancel
        the call if the lease is lost or the owner name given up (`rename`).

        The renewals run in this coroutine between timed waits on the call, not in a task
        of their own: a call that answers within a third of the lease costs no renewal
        machinery at all.
        """
        stage = stage_var.get() or ""
        # A span for the whole call; the call's task copies the context when created, so
        # its HTTP request (and the `traceparent` it sends) is this span's child.
        with self.spans.span(f"stage {stage}", {"task.id": str(task.id), "stage": stage}):
            return await self._await_renewing(task, call)

    async def _await_renewing(self, task: HeldTask, call: Coroutine[Any, Any, T]) -> T:
        call_task = asyncio.ensure_future(call)
        self._calls.add(call_task)
        interval = self.settings.worker_lease_seconds / 3
        try:
            while not call_task.done():
                await asyncio.wait((call_task,), timeout=interval)
                if not call_task.done() and not await self._renew(task):
                    raise LeaseLost()
            if call_task.cancelled():  # by `rename`: the owner name was given up
                raise LeaseLost()
            return call_task.result()
        finally:
            self._calls.discard(call_task)
            if not call_task.done():
                call_task.cancel()
                await asyncio.gather(call_task, return_exceptions=True)

    async def _renew(self, task: HeldTask) -> bool:
        """Extend the lease; False once it is lost. A failed renewal is let pass: the
        database is away, and the fenced write will tell later."""
        try:
            async with self.database.driver() as connection:
                return await queue.renew_lease(
                    connection,
                    task.id,
                    owner=self.owner,
                    lease_seconds=self.settings.worker_lease_seconds,
                )
        except Exception:
            log.warning("task %s: could not renew the lease", task.id, exc_info=True)
            return True

    # ---------------------------------------------------------------- failures

    async def _handle_failure(self, held: HeldTask, failure: StageFailure) -> None:
        task_id = held.id
        stage = _stage_name(held.status)
        attempts = held.stage_attempts + 1
        max_attempts = self.settings.pipeline_max_attempts
        if failure.transient and attempts < max_attempts:
            delay = Backoff(
                base=self.settings.pipeline_backoff_base_seconds,
                cap=self.settings.pipeline_backoff_max_seconds,
            ).delay(attempts)
            log.warning(
                "task %s: %s attempt %d/%d failed, retrying in %.1fs: %s",
                task_id, stage, attempts, max_attempts, delay, failure.reason,
            )  # fmt: skip
            released = await self._write(
                lambda connection: queue.release_for_retry(
                    connection,
                    task_id,
                    owner=self.owner,
                    stage=stage,
                    attempts=attempts,
                    delay_seconds=delay,
                    reason=failure.reason,
                )
            )
            if released:
                self.metrics.stage_retries.labels(stage).inc()
                self.schedule_wakeup(delay)
            return
        # What learners read: the stage and the kind of fault, never the technical reason.
        comment = f"{stage} failed: {failure.user_message}"
        if failure.transient:
            comment += f" (after {attempts} attempts)"
        log.warning("task %s: %s (%s)", task_id, comment, failure.reason)
        if await self._write(
            lambda connection: queue.fail_task(
                connection,
                task_id,
                owner=self.owner,
                comment=comment,
                kind=failure.kind,
                drop_audio=self._drops_audio,
            )
        ):
            self._finished(held, TaskStatus.FAILED)

    def _finished(self, task: HeldTask, status: TaskStatus) -> None:
        self.metrics.tasks_finished.labels(status.value).inc()
        age = (datetime.now(UTC) - task.created_at).total_seconds()
        self.metrics.task_duration.labels(status.value).observe(max(age, 0.0))

    async def _write(self, step: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `step` (one statement) on an autocommit connection, retrying while the
        database is unreachable, for up to one lease.

        The stage output is in memory and the lease still fences the write, so riding
        out a database restart here saves calling the stage again.
        """

        async def attempt() -> T:
            async with self.database.driver() as connection:
                return await step(connection)

        return await self._write_retries(attempt)


def _stage_name(status: TaskStatus) -> str:
    """The service a status waits on, for comments and retry records."""
    return STAGE_BY_STATUS.get(status.value, status.value)
