"""An operator's redelivery reaches the receiver again: same body, a new webhook-id."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.waiting import eventually
from tests.webhooks.conftest import create_task, deliveries, finish, webhook_settings
from tests.webhooks.receiver import Receiver

TOKEN = "operator-secret-token"


@pytest.fixture
def settings() -> Settings:
    return webhook_settings(operator_token=TOKEN)


async def test_a_redelivery_is_sent_again_with_a_new_id(
    client: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver
) -> None:
    task_id = await create_task(client, uuid.uuid4(), receiver.url)
    await finish(engine, [task_id])
    await eventually(lambda: receiver.accepted(), message="the first delivery")
    [first] = await deliveries(engine, task_id)

    response = await client.post(
        f"/console/api/deliveries/{first['id']}/redeliver",
        json={"reason": "the LMS lost it"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text

    received = await eventually(
        lambda: receiver.accepted() if len(receiver.accepted()) == 2 else None,
        message="the redelivery",
    )
    assert received[0].body == received[1].body
    assert received[0].webhook_id != received[1].webhook_id
    assert received[1].webhook_id == str(response.json()["id"])
