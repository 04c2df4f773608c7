"""DELETE /users/{user_id}: everything of one user goes in one transaction, idempotently."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from tests.api.helpers import legacy_upload, resource_upload
from tests.conftest import make_settings, serve

PER_TABLE = """
SELECT (SELECT count(*) FROM tasks WHERE user_id = :u),
       (SELECT count(*) FROM task_audio a JOIN tasks t ON t.id = a.task_id WHERE t.user_id = :u),
       (SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id WHERE t.user_id = :u),
       (SELECT count(*) FROM webhook_deliveries d JOIN tasks t ON t.id = d.task_id
        WHERE t.user_id = :u),
       (SELECT count(*) FROM webhook_attempts w JOIN webhook_deliveries d ON d.id = w.delivery_id
        JOIN tasks t ON t.id = d.task_id WHERE t.user_id = :u),
       (SELECT count(*) FROM queue_users WHERE user_id = :u)
"""


async def held(engine: AsyncEngine, user_id: uuid.UUID) -> tuple[int, ...]:
    """Rows of the user in: tasks, audio, history, deliveries, attempts, queue."""
    async with engine.connect() as connection:
        row = (await connection.execute(text(PER_TABLE), {"u": user_id})).one()
    return tuple(int(value) for value in row)


async def with_a_delivery(engine: AsyncEngine, task_id: str) -> None:
    """An outbox row with one attempt, as the webhook worker leaves them."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                """
                WITH d AS (
                    INSERT INTO webhook_deliveries
                        (task_id, user_id, event_type, callback_url, receiver_host)
                    SELECT id, user_id, 'task.completed', 'https://lms.example.org/hook',
                        'lms.example.org'
                    FROM tasks WHERE id = :t RETURNING id)
                INSERT INTO webhook_attempts
                    (delivery_id, attempt, started_at, duration_seconds, outcome)
                SELECT id, 1, now(), 0.1, 'http-error' FROM d
                """
            ),
            {"t": task_id},
        )


async def test_erasing_a_user_deletes_all_of_theirs_and_nothing_else(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, other = uuid.uuid4(), uuid.uuid4()
    first = (await resource_upload(client, user_id)).json()["id"]
    assert (await legacy_upload(client, user_id)).status_code == 200
    await with_a_delivery(engine, first)
    kept = (await resource_upload(client, other)).json()["id"]
    await with_a_delivery(engine, kept)
    assert await held(engine, user_id) == (2, 2, 2, 1, 1, 1)

    for _ in range(2):  # a repeat finds nothing and answers the same
        response = await client.delete(f"/users/{user_id}")
        assert response.status_code == 204
        assert response.content == b""
        assert await held(engine, user_id) == (0, 0, 0, 0, 0, 0)

    assert await held(engine, other) == (1, 1, 1, 1, 1, 1)
    assert (await client.post("/", json={"user_id": str(user_id)})).json() == []
    gone = await client.get(f"/tasks/{first}", headers={"X-User-Id": str(user_id)})
    assert gone.status_code == 404
    # The user can start again.
    assert (await resource_upload(client, user_id)).status_code == 201


async def test_erasure_is_all_or_nothing(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    user_id = uuid.uuid4()
    tasks = [(await resource_upload(client, user_id)).json()["id"] for _ in range(3)]
    # The history of the last task refuses to go: the erasure fails half-way through.
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"""
                CREATE FUNCTION refuse_erasure() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF OLD.task_id = '{tasks[-1]}' THEN RAISE EXCEPTION 'refused'; END IF;
                    RETURN OLD;
                END $$
                """
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse_erasure BEFORE DELETE ON task_events "
                "FOR EACH ROW EXECUTE FUNCTION refuse_erasure()"
            )
        )
    try:
        failed = await client.delete(f"/users/{user_id}")
        assert failed.status_code == 500
        assert await held(engine, user_id) == (3, 3, 3, 0, 0, 1)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER refuse_erasure ON task_events"))
            await connection.execute(text("DROP FUNCTION refuse_erasure()"))

    assert (await client.delete(f"/users/{user_id}")).status_code == 204
    assert await held(engine, user_id) == (0, 0, 0, 0, 0, 0)


@pytest.fixture
def gateway_only() -> Settings:
    return make_settings(trusted_clients="10.0.0.0/8")


async def test_only_trusted_clients_may_erase(
    gateway_only: Settings, database_url: URL, engine: AsyncEngine, clean_database: None
) -> None:
    user_id = uuid.uuid4()
    async with serve(create_app(make_settings(), database_url=database_url)) as client:
        await resource_upload(client, user_id)
    async with serve(create_app(gateway_only, database_url=database_url)) as client:
        refused = await client.delete(f"/users/{user_id}")
    assert refused.status_code == 403
    assert (await held(engine, user_id))[0] == 1
