"""The delivery loop of one process: claims due deliveries and sends each in a task of its own.

One dispatcher claims as many deliveries as there are free sending slots
(MANAGER_WEBHOOK_CONCURRENCY) in one statement; each attempt then runs on its own, so
a slow receiver holds one slot for at most one attempt's deadline and never the others.
The dispatcher sleeps until a retry falls due, a slot frees up or
MANAGER_WEBHOOK_POLL_SECONDS pass: a new delivery waits at most that long. It is not
woken by task events: most tasks have no callback, and a claim per event would cost
more than the poll.

Fairness: one receiver host holds at most MANAGER_WEBHOOK_CONCURRENCY_PER_HOST of the
slots, the claim takes due deliveries round-robin across hosts, and a host whose
breaker is open (app/webhooks/breaker.py) is left out of the claim altogether.

Every statement of the loop is one of `outbox`'s, on `Database.driver()`. The one
exception is the body: the task's detail document, read by the API's own code (handed in
as `render`), which reads through a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.engine import Database
from app.metrics import Metrics
from app.retry import Backoff, retrying
from app.tracing import NO_SPANS, SpanAttributes, Spans
from app.webhooks import outbox
from app.webhooks.breaker import ReceiverBreakers
from app.webhooks.outbox import AttemptRecord, ClaimedDelivery
from app.webhooks.payload import delivery_body
from app.webhooks.policy import CallbackPolicy, CallbackRefused
from app.webhooks.sender import AttemptResult, send_once

log = logging.getLogger(__name__)

# session, user id, task id → the task as its detail route shows it (None: deleted).
# Given by the composition root: the shape belongs to the API, above this layer.
TaskRenderer = Callable[[AsyncSession, uuid.UUID, uuid.UUID], Awaitable[dict[str, Any] | None]]

# A lease outlives the attempt's deadline by this much: the result is written well before
# another process may take the delivery over.
LEASE_MARGIN_SECONDS = 5.0
ERROR_PAUSE_SECONDS = 0.2
# With sends in flight, a claim waits this long for half the slots to be free, so that one
# statement claims several deliveries; a slow receiver delays the next claim by no more.
CLAIM_BATCH_WINDOW_SECONDS = 0.05
RELEASE_SECONDS = 2.0
# How often the idle loop ends overdue deliveries no attempt will reach soon (behind an
# open breaker): a tenth of the retry window, at most this. It reads the pending rows.
EXPIRY_SWEEP_SECONDS = 60.0
# The send outcomes that end a delivery, and the state it is stored in then; any other
# outcome is tried again.
FINAL_STATE_BY_OUTCOME = {"delivered": "delivered", "gone": "disabled", "refused": "refused"}


def delivery_owner_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:wh{uuid.uuid4().hex[:6]}"


class DeliveryWorker:
    """Starts, wakes and stops the delivery loop; the lifespan owns one per process."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        metrics: Metrics,
        *,
        render: TaskRenderer,
        policy: CallbackPolicy,
        client: httpx.AsyncClient,
        owner: str | None = None,
        spans: Spans = NO_SPANS,
    ) -> None:
        self.settings = settings
        self.spans = spans
        self.database = database
        self.metrics = metrics
        self.render = render
        self.policy = policy
        self.client = client
        self.owner = owner or delivery_owner_name()
        self.keys = settings.webhook_keys
        self.concurrency = settings.webhook_concurrency if self.keys else 0
        self.timeout = settings.webhook_timeout_seconds
        self.backoff = Backoff(
            base=settings.webhook_backoff_base_seconds, cap=settings.webhook_backoff_max_seconds
        )
        self.max_age_seconds = settings.webhook_max_age_hours * 3600
        self.per_host = settings.webhook_concurrency_per_host
        self.breakers = ReceiverBreakers(
            failures=settings.webhook_breaker_failures,
            cooldown=settings.webhook_breaker_cooldown_seconds,
            max_cooldown=settings.webhook_breaker_max_cooldown_seconds,
            on_change=metrics.webhook_receivers_open.set,
        )
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._grace_ends: float | None = None  # loop time; set by the stop signal
        self._loop: asyncio.Task[None] | None = None
        self._sending: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._per_host: Counter[str] = Counter()  # attempts in flight by receiver host
        self._sweep_every = min(EXPIRY_SWEEP_SECONDS, self.max_age_seconds / 10)
        self._next_sweep = 0.0  # loop time

    @property
    def sending(self) -> int:
        return len(self._sending)

    def start(self) -> None:
        if self.concurrency > 0:
            self._loop = asyncio.create_task(self._run(), name="webhook-deliveries")
            log.info("webhook deliveries: %d at a time as %s", self.concurrency, self.owner)

    def wake(self) -> None:
        """Look for due deliveries now (a task may just have ended)."""
        self._wakeup.set()

    def begin_stop(self) -> None:
        """Stop claiming now; attempts under way get the grace period from this moment."""
        if self._grace_ends is None:
            loop = asyncio.get_running_loop()
            self._grace_ends = loop.time() + self.settings.shutdown_grace_seconds
        self._stopping = True
        self.wake()

    async def stop(self) -> None:
        """Stop claiming; attempts under way get the grace period, then are handed back."""
        self.begin_stop()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if not self._sending:
            return
        # The grace period runs from the signal, alongside the pipeline's, not after it.
        assert self._grace_ends is not None
        left = max(0.0, self._grace_ends - asyncio.get_running_loop().time())
        _, unfinished = await asyncio.wait(list(self._sending), timeout=left)
        ids = [self._sending[task].id for task in unfinished]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            async with asyncio.timeout(RELEASE_SECONDS):
                async with self.database.driver() as connection:
                    await outbox.release(connection, ids, owner=self.owner)
        except Exception:  # their leases expire on their own
            log.warning("could not hand back the webhook deliveries in flight", exc_info=True)

    async def _run(self) -> None:
        errors = retrying(
            Backoff(base=ERROR_PAUSE_SECONDS, cap=self.settings.webhook_poll_seconds),
            log=log,
            message="webhook dispatcher error; going on",
            stop=lambda _: self._stopping,
            traceback=True,
        )
        try:
            async with self.database.driver() as connection:
                await outbox.store_limits(
                    connection, max_pending_per_user=self.settings.webhook_max_pending_per_user
                )
        except Exception:  # the trigger goes on with the limits it has
            log.warning("could not store the webhook limits", exc_info=True)
        while not self._stopping:
            try:
                await errors(self._round)
            except Exception:
                log.warning("webhook dispatcher error while stopping", exc_info=True)

    async def _round(self) -> None:
        """Claim what fits into the free slots; wait when nothing more is due now."""
        free = self.concurrency - len(self._sending)
        if free <= 0:
            self._wakeup.clear()
            await asyncio.wait(list(self._sending), return_when=asyncio.FIRST_COMPLETED)
            return
        if self._sending and free < max(1, self.concurrency // 2):
            done, _ = await asyncio.wait(
                list(self._sending),
                timeout=CLAIM_BATCH_WINDOW_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if done:
                return  # count the free slots again
        self._wakeup.clear()
        async with self.database.driver() as connection:
            claimed = await outbox.claim(
                connection,
                owner=self.owner,
                limit=free,
                lease_seconds=self.timeout + LEASE_MARGIN_SECONDS,
                per_host=self.per_host,
                rooms=self._rooms(),
            )
        for delivery in claimed:
            self.breakers.claimed(delivery.receiver_host)
            self._per_host[delivery.receiver_host] += 1
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
            self._sending[task] = delivery
            task.add_done_callback(self._finished)
        if len(claimed) < free:
            await self._idle()

    def _rooms(self) -> dict[str, int]:
        """Hosts with less room than `per_host` now: slots taken here, or breaker open."""
        hosts = set(self._per_host) | set(self.breakers.blocked())
        rooms = {
            host: self.breakers.room(host, max(0, self.per_host - self._per_host[host]))
            for host in hosts
        }
        return {host: room for host, room in rooms.items() if room < self.per_host}

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._sending.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed", exc_info=task.exception())
        if delivery is None:
            return
        host = delivery.receiver_host
        was_full = self._per_host[host] >= self.per_host
        self._per_host[host] -= 1
        if self._per_host[host] <= 0:
            del self._per_host[host]
        # No wake-up for a send in general: a claim after every send would cost two
        # queries per delivery when deliveries trickle in, and a full dispatcher waits on
        # the sends themselves. A host that was at its limit may have deliveries due
        # that only this slot lets through: look now rather than at the next poll.
        if was_full:
            self.wake()

    async def _idle(self) -> None:
        timeout = self.settings.webhook_poll_seconds
        probe = self.breakers.next_probe_in()
        if probe is not None:
            timeout = min(timeout, max(probe, 0.01))
        with contextlib.suppress(Exception):
            async with self.database.driver() as connection:
                self._report_dropped(await outbox.report_dropped(connection))
                await self._sweep(connection)
                blocked = [host for host, room in self._rooms().items() if room <= 0]
                due = await outbox.seconds_until_next_due(connection, blocked=blocked)
            if due is not None:
                timeout = min(timeout, max(due, 0.01))
        if not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)

    async def _sweep(self, connection: asyncpg.Connection) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        expired = await outbox.expire_overdue(connection, max_age_seconds=self.max_age_seconds)
        if expired:
            self.metrics.webhook_deliveries.labels("expired").inc(expired)
            log.warning(
                "webhooks: %d delivery(ies) expired unattempted after %gh (receiver down)",
                expired, self.settings.webhook_max_age_hours,
            )  # fmt: skip

    def _report_dropped(self, dropped: dict[uuid.UUID, int]) -> None:
        """Log and count deliveries the per-user cap dropped (the trigger cannot)."""
        for user_id, count in dropped.items():
            self.metrics.webhook_deliveries.labels("dropped").inc(count)
            log.warning(
                "webhooks: %d delivery(ies) of user %s dropped: the user already had "
                "MANAGER_WEBHOOK_MAX_PENDING_PER_USER (%d) pending",
                count, user_id, self.settings.webhook_max_pending_per_user,
            )  # fmt: skip

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        outcome: str | None = None
        attributes: SpanAttributes = {
            "task.id": str(delivery.task_id),
            "webhook.id": str(delivery.id),
            "webhook.attempt": delivery.attempt,
        }
        try:
            # The POST's span, and the `traceparent` the receiver gets, are its children.
            with self.spans.span("webhook delivery", attributes):
                outcome = await self._attempt(delivery)
        finally:
            if self.breakers.record(delivery.receiver_host, outcome):
                self.wake()  # its backlog is due now, not at the next poll

    async def _attempt(self, delivery: ClaimedDelivery) -> str | None:
        """One attempt and its record; the outcome, None when nothing was sent."""
        started_at, started = datetime.now(UTC), time.monotonic()
        try:
            body = delivery.payload or await self._build(delivery)
            if body is None:
                return None  # the task was deleted, and its delivery with it
            self.policy.parse(delivery.callback_url)  # the allowed hosts may have changed
            result = await send_once(
                self.client,
                delivery.callback_url,
                keys=self.keys,
                message_id=str(delivery.id),
                body=body,
                deadline=self.timeout,
            )
        except CallbackRefused as refused:
            result = AttemptResult("refused", detail=str(refused))
        elapsed = time.monotonic() - started
        state, retry_in = self._next_state(delivery, result, elapsed)
        record = AttemptRecord(
            attempt=delivery.attempt,
            started_at=started_at,
            duration_seconds=elapsed,
            status_code=result.status_code,
            outcome=result.outcome,
            detail=result.detail,
        )
        self.metrics.webhook_attempts.labels(result.outcome).inc()
        async with self.database.driver() as connection:
            written = await outbox.record_attempt(
                connection,
                delivery,
                owner=self.owner,
                state=state,
                retry_in=retry_in,
                record=record,
            )
        if not written:
            log.warning("webhook %s: lease lost before its result was written", delivery.id)
            return result.outcome
        if state == outbox.PENDING:
            # Retry when due rather than at the next poll.
            asyncio.get_running_loop().call_later(retry_in, self.wake)
        else:
            self.metrics.webhook_deliveries.labels(state).inc()
        if state not in ("delivered", outbox.PENDING):
            log.warning(
                "webhook %s for task %s ended %s after %d attempt(s): %s",
                delivery.id, delivery.task_id, state, delivery.attempt,
                result.detail or result.status_code,
            )  # fmt: skip
        return result.outcome

    def _next_state(
        self, delivery: ClaimedDelivery, result: AttemptResult, elapsed: float
    ) -> tuple[str, float]:
        """The delivery's state after this attempt, and the wait before the next one."""
        final = FINAL_STATE_BY_OUTCOME.get(result.outcome)
        if final is not None:
            return final, 0.0
        retry_in = self.backoff.delay(delivery.attempt)
        if delivery.age_seconds + elapsed + retry_in > self.max_age_seconds:
            return "expired", 0.0
        return outbox.PENDING, retry_in

    async def _build(self, delivery: ClaimedDelivery) -> bytes | None:
        """The body, built at the first claim from the terminal task and stored for good."""
        async with self.database.autocommit_sessions() as session:
            task = await self.render(session, delivery.user_id, delivery.task_id)
        if task is None:
            return None
        body = delivery_body(delivery.event_type, delivery.created_at, task)
        async with self.database.driver() as connection:
            return await outbox.store_payload(connection, delivery.id, body)
