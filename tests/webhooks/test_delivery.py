"""Deliveries end to end in one process: signed, complete, retried, listed, bounded."""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.main import create_app
from tests.conftest import pipeline_settings, serve
from tests.fakes import FakeServices
from tests.pipeline.conftest import wait_terminal
from tests.waiting import eventually
from tests.webhooks.conftest import (
    FAST,
    attempts,
    create_task,
    deliveries,
    finish,
    wait_states,
    webhook_settings,
)
from tests.webhooks.receiver import (
    OTHER_SECRET,
    SECRET,
    Receiver,
    derived_secret,
    running_receiver,
)


async def test_a_task_run_by_the_pipeline_is_delivered_as_its_detail_shows_it(
    fakes: FakeServices,
    database_url: URL,
    clean_database: None,
    engine: AsyncEngine,
    receiver: Receiver,
) -> None:
    app = create_app(pipeline_settings(fakes, **FAST), database_url=database_url)
    user_id = uuid.uuid4()
    async with serve(app) as client:
        task_id = await create_task(client, user_id, receiver.url)
        await wait_terminal(engine, task_id)
        await eventually(lambda: receiver.accepted(), message="the delivery")
        detail = (await client.get(f"/tasks/{task_id}", headers={"X-User-Id": str(user_id)})).json()
        listed = await client.get(
            f"/tasks/{task_id}/deliveries", headers={"X-User-Id": str(user_id)}
        )
        others = await client.get(
            f"/tasks/{task_id}/deliveries", headers={"X-User-Id": str(uuid.uuid4())}
        )
        metrics = (await client.get("/metrics")).text

    [delivery] = receiver.accepted()
    body = json.loads(delivery.body)
    assert body["type"] == "task.completed"
    assert body["data"] == detail
    assert detail["callback_url"] == receiver.url
    assert detail["status"] == "completed"
    [row] = await deliveries(engine, task_id)
    assert delivery.webhook_id == str(row["id"])
    assert body["timestamp"] == row["created_at"].isoformat()
    assert abs(int(delivery.timestamp) - time.time()) < 60

    assert listed.status_code == 200
    [report] = listed.json()
    assert report["id"] == delivery.webhook_id
    assert report["state"] == "delivered"
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in report["attempts"]] == [
        (1, 200, "delivered")
    ]
    assert others.status_code == 404
    assert 'ilps_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
    assert 'ilps_webhook_deliveries_total{state="delivered"} 1.0' in metrics
    assert "ilps_webhooks_pending 0.0" in metrics
    assert "ilps_oldest_pending_webhook_age_seconds 0.0" in metrics


async def test_a_receiver_down_then_up_gets_everything_with_the_same_ids(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    receiver = Receiver()  # not started: nothing listens on its port
    user_id = uuid.uuid4()
    task_ids = [await create_task(client, user_id, receiver.url) for _ in range(6)]
    await finish(engine, task_ids[:4], "completed")
    await finish(engine, task_ids[4:], "failed")

    async def retried() -> bool:
        rows = await deliveries(engine)
        return len(rows) == 6 and all(row["attempts"] >= 2 for row in rows)

    await eventually(retried, message="every delivery to fail twice")
    metrics = (await client.get("/metrics")).text
    assert "ilps_webhooks_pending 6.0" in metrics
    [age] = re.findall(r"^ilps_oldest_pending_webhook_age_seconds (\S+)$", metrics, re.M)
    assert float(age) > 0
    receiver.start()
    try:
        rows = await wait_states(engine, 6)
    finally:
        receiver.stop()

    ids = {str(row["id"]) for row in rows}
    assert receiver.accepted_ids() == dict.fromkeys(ids, 1)
    types = sorted(json.loads(r.body)["type"] for r in receiver.accepted())
    assert types == ["task.completed"] * 4 + ["task.failed"] * 2
    failures = [a for a in await attempts(engine) if a["outcome"] != "delivered"]
    assert len(failures) >= 2 * len(ids)  # each failed at least twice while it was down
    assert {a["outcome"] for a in failures} == {"connection_error"}
    assert all(a["status_code"] is None for a in failures)


async def test_retries_send_the_same_id_and_bytes_and_410_disables(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver
) -> None:
    user_id = uuid.uuid4()
    receiver.script.extend([503, "redirect", 404])
    retried = await create_task(client, user_id, receiver.url)
    await finish(engine, [retried])
    await wait_states(engine, 1)

    sent = receiver.attempts_of(receiver.accepted()[0].webhook_id)
    assert [r.answered for r in sent] == [503, "redirect", 404, 200]
    assert len({r.body for r in sent}) == 1
    assert all(r.verified for r in sent)
    outcomes = [(a["attempt"], a["status_code"], a["outcome"]) for a in await attempts(engine)]
    assert outcomes == [
        (1, 503, "server_error"), (2, 302, "redirect"), (3, 404, "rejected"), (4, 200, "delivered")
    ]  # fmt: skip

    receiver.script.extend([410])
    gone = await create_task(client, user_id, receiver.url)
    await finish(engine, [gone], "failed")
    await wait_states(engine, 1, state="disabled")
    [disabled] = await deliveries(engine, gone)
    assert disabled["attempts"] == 1
    assert len(receiver.attempts_of(str(disabled["id"]))) == 1


async def test_a_tampered_body_fails_the_reference_verifier(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver
) -> None:
    task_id = await create_task(client, uuid.uuid4(), receiver.url)
    await finish(engine, [task_id])
    await wait_states(engine, 1)
    [delivery] = receiver.accepted()
    headers = {
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": delivery.timestamp,
        "webhook-signature": delivery.signature,
    }
    verifier = Webhook(receiver.secret)
    assert verifier.verify(delivery.body, headers)["data"]["id"] == task_id

    tampered = delivery.body.replace(b'"completed"', b'"failed"', 1)
    assert tampered != delivery.body
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(delivery.body, {**headers, "webhook-id": str(uuid.uuid4())})
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(delivery.body, headers)
    with pytest.raises(WebhookVerificationError):  # the master secret signs nothing itself
        Webhook(SECRET).verify(delivery.body, headers)


async def test_no_receiver_can_verify_or_forge_another_receivers_deliveries(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Each receiver (origin) has a secret of its own: A's secret verifies A's delivery and
    fails on B's, so A, holding only its own, cannot sign anything B would accept."""
    with running_receiver() as first, running_receiver() as second:
        user_id = uuid.uuid4()
        ids = [await create_task(client, user_id, r.url) for r in (first, second)]
        await finish(engine, ids)
        await wait_states(engine, 2)
    assert first.secret != second.secret
    for own, other in ((first, second), (second, first)):
        [delivery] = own.accepted()
        headers = {
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": delivery.timestamp,
            "webhook-signature": delivery.signature,
        }
        assert Webhook(own.secret).verify(delivery.body, headers)["data"]["callback_url"] == own.url
        with pytest.raises(WebhookVerificationError):
            Webhook(other.secret).verify(delivery.body, headers)


async def test_while_rotating_both_secrets_sign(
    database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    old, new = Receiver(secret=SECRET), Receiver(secret=OTHER_SECRET)
    app = create_app(
        webhook_settings(webhook_secret=f"{SECRET} {OTHER_SECRET}"), database_url=database_url
    )
    old.start()
    new.start()
    try:
        async with serve(app) as client:
            user_id = uuid.uuid4()
            ids = [await create_task(client, user_id, r.url) for r in (old, new)]
            await finish(engine, ids)
            await wait_states(engine, 2)
    finally:
        old.stop()
        new.stop()
    for receiver in (old, new):
        [delivery] = receiver.accepted()
        assert len(delivery.signature.split(" ")) == 2
        # The receiver's secrets derived from either master secret verify it.
        headers = {
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": delivery.timestamp,
            "webhook-signature": delivery.signature,
        }
        for master in (SECRET, OTHER_SECRET):
            assert Webhook(derived_secret(master, receiver.url)).verify(delivery.body, headers)


async def test_hostile_receivers_cost_one_deadline_each_and_block_nobody(
    database_url: URL, clean_database: None, engine: AsyncEngine, receiver: Receiver
) -> None:
    """A trickled body, a huge body and a redirect loop next to a good receiver."""
    app: FastAPI = create_app(
        webhook_settings(webhook_timeout_seconds=1.0, webhook_backoff_base_seconds=60.0,
                         webhook_backoff_max_seconds=60.0),
        database_url=database_url,
    )  # fmt: skip
    receiver.script.extend(["trickle", "hang", "huge", "redirect"])
    async with serve(app) as client:
        user_id = uuid.uuid4()
        hostile = [await create_task(client, user_id, receiver.url) for _ in range(4)]
        await finish(engine, hostile)
        await eventually(lambda: len(receiver.received) >= 3, message="the hostile answers")
        good = await create_task(client, user_id, receiver.url)
        await finish(engine, [good])
        # The wait gives up long before the trickle (a minute) or the hang would end on
        # their own: the good one goes through because each hostile one held its slot for
        # one deadline only.
        await eventually(lambda: receiver.accepted(), message="the good delivery")

        async def all_tried() -> list[dict[str, object]] | None:
            rows = await attempts(engine)
            return rows if len(rows) == 5 else None

        rows: list[dict[str, object]] = await eventually(all_tried, message="five attempts")

    by_outcome = sorted(str(row["outcome"]) for row in rows)
    # trickle, hang → timeout; huge → read up to the cap only, then 200; redirect → retried
    assert by_outcome == ["delivered", "delivered", "redirect", "timeout", "timeout"]


async def test_no_delivery_for_a_rolled_back_ending_nor_without_a_callback(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver
) -> None:
    user_id = uuid.uuid4()
    with_callback = await create_task(client, user_id, receiver.url)
    response = await client.post(
        "/tasks",
        data={"title": "t", "text_id": str(uuid.uuid4())},
        files={"file": ("a.pcm", b"\x00" * 64, "application/octet-stream")},
        headers={"X-User-Id": str(user_id)},
    )
    without = response.json()["id"]

    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(
            text("UPDATE tasks SET status = 'completed' WHERE id = :id"), {"id": with_callback}
        )
        assert (
            await connection.scalar(text("SELECT count(*) FROM webhook_deliveries"))
        ) == 1  # written by the same transaction ...
        await transaction.rollback()  # ... and gone with it
    assert await deliveries(engine) == []

    await finish(engine, [with_callback, without])
    await finish(engine, [with_callback], "failed")  # terminal to terminal: no second one
    rows = await deliveries(engine)
    assert [str(row["task_id"]) for row in rows] == [with_callback]
