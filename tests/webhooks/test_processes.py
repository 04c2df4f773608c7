"""Deliveries across real processes: a crash between commit and send, and two senders."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.helpers import resource_upload
from tests.postgres import SessionPostgres
from tests.process import ServiceProcess
from tests.waiting import eventually
from tests.webhooks.conftest import attempts, deliveries, finish, wait_states
from tests.webhooks.receiver import SECRET, Receiver

pytestmark = pytest.mark.slow

ProcessFactory = Callable[..., ServiceProcess]


@pytest.fixture
def service_process(
    postgres: SessionPostgres, database_url: URL, tmp_path: Path, clean_database: None
) -> ProcessFactory:
    def make(name: str, **overrides: str) -> ServiceProcess:
        environment = {
            **postgres.environment(database_url),
            "MANAGER_DEBUG_MODE": "false",
            # No pipeline: the tests end tasks with the same UPDATE the pipeline commits.
            "MANAGER_WORKER_CONCURRENCY": "0",
            "MANAGER_SERVICE_PREPROCESSING_HOST": "127.0.0.1",
            "MANAGER_SERVICE_PREPROCESSING_PORT": "9",
            "MANAGER_SERVICE_TRANSCRIBING_HOST": "127.0.0.1",
            "MANAGER_SERVICE_TRANSCRIBING_PORT": "9",
            "MANAGER_SERVICE_FEEDBACK_HOST": "127.0.0.1",
            "MANAGER_SERVICE_FEEDBACK_PORT": "9",
            "MANAGER_WEBHOOK_SECRET": SECRET,
            "MANAGER_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "MANAGER_WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
            "MANAGER_WEBHOOK_BACKOFF_MAX_SECONDS": "0.2",
            "MANAGER_WEBHOOK_POLL_SECONDS": "0.1",
            "MANAGER_SHUTDOWN_GRACE_SECONDS": "1",
            # One user creates every task here.
            "MANAGER_MAX_UNFINISHED_TASKS_PER_USER": "1000",
            **overrides,
        }
        return ServiceProcess(environment, tmp_path / f"{name}.log")

    return make


async def create_tasks(base_url: str, callback_url: str, count: int) -> list[str]:
    user_id = uuid.uuid4()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                resource_upload(client, user_id, form_extra={"callback_url": callback_url})
                for _ in range(count)
            )
        )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    return [str(r.json()["id"]) for r in responses]


async def test_a_crash_between_commit_and_send_loses_no_delivery(
    service_process: ProcessFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    """One delivery is mid-attempt when its process is killed; another task ends while no
    process runs at all. The next process makes both, with the ids and bodies of before."""
    receiver.script.append("hang")
    lease_timeout = {"MANAGER_WEBHOOK_TIMEOUT_SECONDS": "3"}  # a lease of 3 + 5 s
    with service_process("first", **lease_timeout) as first:
        in_flight, committed_only = await create_tasks(first.base_url, receiver.url, 2)
        await finish(engine, [in_flight])
        await eventually(receiver.in_flight, message="the attempt to reach the receiver")
        first.kill()
    await finish(engine, [committed_only])  # committed, and no process to send it

    with service_process("second", **lease_timeout):
        rows = await wait_states(engine, 2, within=40)

    by_task = {str(row["task_id"]): str(row["id"]) for row in rows}
    assert receiver.accepted_ids() == {by_task[in_flight]: 1, by_task[committed_only]: 1}
    killed_attempt, resumed = receiver.attempts_of(by_task[in_flight])
    assert killed_attempt.answered == "hang"
    assert killed_attempt.body == resumed.body
    assert [r.answered for r in receiver.attempts_of(by_task[committed_only])] == [200]


def _attempts_sent(metrics_text: str) -> float:
    return sum(
        float(value)
        for value in re.findall(r"^ilps_webhook_attempts_total\{[^}]*\} (\S+)$", metrics_text, re.M)
    )


async def test_two_processes_never_send_one_delivery_twice_at_once(
    service_process: ProcessFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    receiver.per_id_failures = 2  # every delivery takes three attempts
    receiver.latency = 0.02
    count = 30
    # Two 500s per delivery would open the receiver's breaker: not what this test is about.
    no_breaker = {"MANAGER_WEBHOOK_BREAKER_FAILURES": "1000"}
    with service_process("a", **no_breaker) as a, service_process("b", **no_breaker) as b:
        task_ids = await create_tasks(a.base_url, receiver.url, count)
        await finish(engine, task_ids)
        await wait_states(engine, count, within=60)
        async with httpx.AsyncClient() as client:
            sent = [
                _attempts_sent((await client.get(f"{p.base_url}/metrics")).text) for p in (a, b)
            ]

    assert receiver.overlaps == []
    ids = {str(row["id"]) for row in await deliveries(engine)}
    assert receiver.accepted_ids() == dict.fromkeys(ids, 1)
    assert Counter(r.webhook_id for r in receiver.received) == dict.fromkeys(ids, 3)
    numbers: dict[str, list[int]] = {}
    for row in await attempts(engine):
        numbers.setdefault(str(row["delivery_id"]), []).append(int(row["attempt"]))
    assert numbers == {webhook_id: [1, 2, 3] for webhook_id in ids}
    assert sum(sent) == 3 * count
    assert all(share > 0 for share in sent), sent  # both processes took part


async def test_sigterm_hands_an_attempt_back_for_the_next_process(
    service_process: ProcessFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    """An attempt still running at the end of the grace period is handed back at once,
    not left to its lease: the next process delivers it without waiting."""
    receiver.script.append("hang")
    with service_process("stopped", MANAGER_WEBHOOK_TIMEOUT_SECONDS="60") as first:
        [task_id] = await create_tasks(first.base_url, receiver.url, 1)
        await finish(engine, [task_id])
        await eventually(receiver.in_flight, message="the attempt to reach the receiver")
        # Far short of the 60 s timeout: only an attempt ended with the grace period
        # lets the process exit in time.
        first.terminate(within=15)
    [row] = await deliveries(engine)
    assert row["lease_owner"] is None
    assert row["state"] == "pending"

    # A lease of 60 + 5 s would still run: only the hand-back lets this be prompt.
    with service_process("next", MANAGER_WEBHOOK_TIMEOUT_SECONDS="60"):
        await wait_states(engine, 1, within=20)
    assert receiver.accepted_ids() == {str(row["id"]): 1}
