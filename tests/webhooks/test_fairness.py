"""Fairness between receivers: one host's share of the slots, its breaker, a user's cap."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.webhooks import outbox
from tests.conftest import serve
from tests.waiting import eventually
from tests.webhooks.conftest import deliveries, finish, wait_states, webhook_settings
from tests.webhooks.receiver import Receiver


class SilentReceiver:
    """A loopback port that accepts connections, reads what comes and never answers."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass
        writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SilentReceiver]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
            for writer in self._writers:
                writer.close()


async def seed(engine: AsyncEngine, user_id: uuid.UUID, callback_url: str, count: int) -> list[str]:
    """Tasks with a callback, as the create route leaves them (without their upload)."""
    async with engine.begin() as connection:
        rows = await connection.execute(
            text(
                "INSERT INTO tasks (user_id, text_id, callback_url) "
                "SELECT :user_id, gen_random_uuid(), :url FROM generate_series(1, :count) "
                "RETURNING id"
            ),
            {"user_id": user_id, "url": callback_url, "count": count},
        )
        return [str(row.id) for row in rows]


async def metric(client: httpx.AsyncClient, name: str) -> float:
    found = re.findall(rf"^{re.escape(name)} (\S+)$", (await client.get("/metrics")).text, re.M)
    return float(found[0]) if found else 0.0


async def attempts_to(engine: AsyncEngine, callback_url: str) -> int:
    async with engine.connect() as connection:
        value = await connection.scalar(
            text(
                "SELECT coalesce(sum(attempts), 0) FROM webhook_deliveries WHERE callback_url = :u"
            ),
            {"u": callback_url},
        )
    return int(value)


async def nothing_leased(engine: AsyncEngine, callback_url: str) -> bool:
    async with engine.connect() as connection:
        leased = await connection.scalar(
            text(
                "SELECT count(*) FROM webhook_deliveries "
                "WHERE callback_url = :u AND lease_owner IS NOT NULL"
            ),
            {"u": callback_url},
        )
    return bool(leased == 0)


@pytest.mark.slow
async def test_a_silent_receiver_with_500_deliveries_delays_a_healthy_one_by_little(
    database_url: URL, clean_database: None, engine: AsyncEngine, receiver: Receiver
) -> None:
    """500 deliveries to a host that accepts and never answers, ended first, then 20 to a
    healthy host: the silent host holds its 2 of the 4 slots, the healthy deliveries go
    through the other two, and the silent host's breaker soon spares its backlog."""
    settings = webhook_settings(webhook_max_pending_per_user=0, webhook_breaker_failures=5)
    app = create_app(settings, database_url=database_url)
    silent = SilentReceiver()
    async with silent.running(), serve(app) as client:
        flooded = await seed(engine, uuid.uuid4(), silent.url, 500)
        healthy = await seed(engine, uuid.uuid4(), receiver.url, 20)
        await finish(engine, flooded)
        await eventually(lambda: silent.accepted >= 2, message="the silent host to take 2 slots")
        await finish(engine, healthy)
        await eventually(lambda: len(receiver.accepted()) >= 20, within=60, message="20 healthy")
        await eventually(
            lambda: metric(client, "ilps_webhook_receivers_open"),
            message="the silent host's breaker",
        )
        attempted = await attempts_to(engine, silent.url)

    assert len(receiver.accepted_ids()) == 20
    # 5 failures open the breaker; only probes go to it then, one at a time.
    assert attempted < 20, attempted


async def test_the_breaker_opens_after_k_failures_and_nothing_more_is_attempted(
    database_url: URL, clean_database: None, engine: AsyncEngine, receiver: Receiver
) -> None:
    settings = webhook_settings(
        webhook_breaker_failures=3,
        webhook_breaker_cooldown_seconds=600,
        webhook_breaker_max_cooldown_seconds=600,
    )
    down = Receiver()  # nothing listens on its port: connection errors at once
    app = create_app(settings, database_url=database_url)
    async with serve(app) as client:
        await finish(engine, await seed(engine, uuid.uuid4(), down.url, 10))
        await eventually(
            lambda: metric(client, "ilps_webhook_receivers_open"), message="the breaker to open"
        )
        # A claim under way when it opened still sends what it took: let those end.
        await eventually(lambda: nothing_leased(engine, down.url), message="no attempt out")
        opened_at = await attempts_to(engine, down.url)
        # Rounds go on (a delivery to another host arrives), yet the open host gets nothing.
        await finish(engine, await seed(engine, uuid.uuid4(), receiver.url, 1))
        await eventually(lambda: receiver.accepted(), message="a delivery elsewhere")
        await wait_states(engine, 1)
        after = await attempts_to(engine, down.url)

    # The third failure opens it; what was in flight or being claimed then still went.
    assert 3 <= opened_at <= 5
    assert after == opened_at
    rows = [row for row in await deliveries(engine) if row["callback_url"] == down.url]
    assert {row["state"] for row in rows} == {"pending"}
    assert sum(1 for row in rows if row["attempts"] == 0) >= 5  # not charged while open


async def test_a_half_open_probe_that_succeeds_closes_the_breaker(
    database_url: URL,
    clean_database: None,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = webhook_settings(
        webhook_breaker_failures=3,
        webhook_breaker_cooldown_seconds=0.5,
        webhook_breaker_max_cooldown_seconds=1.0,
    )
    receiver = Receiver()  # down at first
    app = create_app(settings, database_url=database_url)
    caplog.set_level(logging.INFO, logger="app.webhooks.breaker")
    async with serve(app) as client:
        await finish(engine, await seed(engine, uuid.uuid4(), receiver.url, 10))
        await eventually(
            lambda: metric(client, "ilps_webhook_receivers_open"), message="the breaker to open"
        )
        receiver.start()
        try:
            await wait_states(engine, 10)
        finally:
            receiver.stop()
        still_open = await metric(client, "ilps_webhook_receivers_open")

    assert still_open == 0.0
    assert len(receiver.accepted_ids()) == 10
    messages = [r.getMessage() for r in caplog.records if r.name == "app.webhooks.breaker"]
    assert sum("breaker open" in m for m in messages) == 1, messages
    assert sum("breaker closed" in m for m in messages) == 1, messages


async def test_a_users_deliveries_beyond_the_cap_are_dropped_and_reported(
    database_url: URL,
    clean_database: None,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = webhook_settings(webhook_max_pending_per_user=3)
    down = Receiver()  # deliveries stay pending
    app = create_app(settings, database_url=database_url)
    flooding, other = uuid.uuid4(), uuid.uuid4()

    async def cap_stored() -> bool:
        async with engine.connect() as connection:
            stored = await connection.scalar(
                text("SELECT max_pending_per_user FROM webhook_limits")
            )
        return bool(stored == 3)

    try:
        async with serve(app) as client:
            await eventually(cap_stored, message="the process to store its cap")
            flooded = await seed(engine, flooding, down.url, 5)
            await finish(engine, flooded)  # one statement: the trigger runs row by row
            await finish(engine, await seed(engine, other, down.url, 1))
            await eventually(
                lambda: metric(client, 'ilps_webhook_deliveries_total{state="dropped"}'),
                message="the drops to be counted",
            )
            listed = [
                (
                    await client.get(
                        f"/tasks/{task_id}/deliveries", headers={"X-User-Id": str(flooding)}
                    )
                ).json()
                for task_id in flooded
            ]
            dropped_count = await metric(client, 'ilps_webhook_deliveries_total{state="dropped"}')
    finally:
        async with engine.connect() as pooled:
            driver = (await pooled.get_raw_connection()).driver_connection
            assert isinstance(driver, asyncpg.Connection)
            await outbox.store_limits(driver, max_pending_per_user=100)  # the default

    states = sorted(report["state"] for [report] in listed)
    assert states == ["dropped"] * 2 + ["pending"] * 3
    [dropped, *_] = [report for [report] in listed if report["state"] == "dropped"]
    [attempt] = dropped["attempts"]
    assert (attempt["attempt"], attempt["outcome"]) == (0, "dropped")
    assert attempt["detail"] == "the user already has 3 deliveries pending"
    assert dropped["finished_at"] is not None
    assert dropped_count == 2.0
    rows = await deliveries(engine)
    assert [row["state"] for row in rows if row["user_id"] == other] == ["pending"]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "dropped" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert str(flooding) in warnings[0].getMessage()


async def test_deliveries_behind_an_open_breaker_expire_without_an_attempt(
    database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    settings = webhook_settings(
        webhook_breaker_failures=2,
        webhook_breaker_cooldown_seconds=600,
        webhook_breaker_max_cooldown_seconds=600,
        webhook_max_age_hours=0.001,  # 3.6 s
    )
    down = Receiver()
    app = create_app(settings, database_url=database_url)
    async with serve(app) as client:
        await finish(engine, await seed(engine, uuid.uuid4(), down.url, 8))
        rows = await wait_states(engine, 8, state="expired", within=30)
        expired = await metric(client, 'ilps_webhook_deliveries_total{state="expired"}')

    assert expired == 8.0
    assert all(row["finished_at"] is not None for row in rows)
    assert sum(1 for row in rows if row["attempts"] == 0) >= 3  # never tried: the breaker
