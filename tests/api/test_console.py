"""The operator console and its API: retry, bulk retry, cancel, redeliver, and who may."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.console.auth import CSRF_FIELD, TOKEN_COOKIE, csrf_token
from app.db.url import asyncpg_dsn
from app.main import create_app
from app.pipeline import queue
from tests.api.helpers import call_without_body, resource_upload
from tests.conftest import make_settings, serve

TOKEN = "operator-secret-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "alice"}


@pytest.fixture
def settings() -> Settings:
    return make_settings(operator_token=TOKEN)


async def _task(client: httpx.AsyncClient, user_id: uuid.UUID) -> str:
    response = await resource_upload(client, user_id)
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


async def _fail_in_transcribing(engine: AsyncEngine, task_id: str, comment: str) -> None:
    """What the pipeline leaves after transcribing failed: the WAV stored, two transitions."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO task_audio (task_id, kind, content, size) "
                "VALUES (:id, 'preprocessed', '\\x00'::bytea, 1)"
            ),
            {"id": task_id},
        )
        await connection.execute(
            text(
                "UPDATE tasks SET status = 'failed', comment = :comment, completed_at = now(), "
                "last_event_seq = last_event_seq + 2 WHERE id = :id"
            ),
            {"id": task_id, "comment": comment},
        )
        await connection.execute(
            text(
                "INSERT INTO task_events (task_id, seq, kind, status, detail) "
                "SELECT id, last_event_seq - 1, 'status', 'transcribing', NULL FROM tasks "
                "WHERE id = :id UNION ALL SELECT id, last_event_seq, 'status', 'failed', "
                ":comment FROM tasks WHERE id = :id"
            ),
            {"id": task_id, "comment": comment},
        )


async def _row(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).one_or_none()


async def _last_event(engine: AsyncEngine, task_id: str) -> Any:
    return await _row(
        engine,
        "SELECT * FROM task_events WHERE task_id = :id ORDER BY seq DESC LIMIT 1",
        id=task_id,
    )


async def test_the_owner_retries_a_failed_task_from_its_stage(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    await _fail_in_transcribing(engine, task_id, "transcribing failed: down (after 4 attempts)")

    response = await client.post(
        f"/tasks/{task_id}/retry", json={"reason": "try again"}, headers={"X-User-Id": str(user_id)}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"id": task_id, "status": "transcribing", "stage": "transcribing"}
    row = await _row(
        engine, "SELECT status, comment, completed_at FROM tasks WHERE id = :id", id=task_id
    )
    assert tuple(row) == ("transcribing", None, None)
    event = await _last_event(engine, task_id)
    assert event.status == "transcribing"
    assert json.loads(event.detail) == {"action": "retry", "by": "owner", "reason": "try again"}
    queued = await _row(
        engine, "SELECT oldest_unfinished_at FROM queue_users WHERE user_id = :u", u=user_id
    )
    assert queued is not None
    assert queued[0] is not None  # the claim visits this user again


async def test_an_operator_retries_any_users_task(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    await _fail_in_transcribing(engine, task_id, "transcribing failed: down")

    response = await client.post(f"/tasks/{task_id}/retry", headers=OPERATOR)

    assert response.status_code == 200, response.text
    assert json.loads((await _last_event(engine, task_id)).detail)["by"] == "alice"


async def test_another_users_retry_is_not_found(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    await _fail_in_transcribing(engine, task_id, "transcribing failed: down")

    response = await client.post(
        f"/tasks/{task_id}/retry", headers={"X-User-Id": str(uuid.uuid4())}
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "Task not found."}


async def test_a_task_not_failed_is_a_conflict(
    client: httpx.AsyncClient, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    response = await client.post(f"/tasks/{task_id}/retry", headers={"X-User-Id": str(user_id)})
    assert response.status_code == 409
    assert "this one is created" in response.json()["detail"]


async def test_a_task_whose_audio_is_gone_is_a_conflict(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    await _fail_in_transcribing(engine, task_id, "transcribing failed: down")
    async with engine.begin() as connection:  # what audio retention leaves
        await connection.execute(
            text("DELETE FROM task_audio WHERE task_id = :id"), {"id": task_id}
        )

    response = await client.post(f"/tasks/{task_id}/retry", headers={"X-User-Id": str(user_id)})

    assert response.status_code == 409
    assert "audio is no longer stored" in response.json()["detail"]
    assert (await _row(engine, "SELECT status FROM tasks WHERE id = :id", id=task_id))[
        0
    ] == "failed"


async def test_bulk_retry_counts_on_a_dry_run_then_retries(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    outage = [await _task(client, user_id) for _ in range(3)]
    other = await _task(client, user_id)
    for task_id in outage:
        await _fail_in_transcribing(engine, task_id, "transcribing failed: down (after 4 attempts)")
    await _fail_in_transcribing(engine, other, "transcribing failed: bad audio")
    async with engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM task_audio WHERE task_id = :id"), {"id": outage[2]}
        )
    body = {"stage": "transcribing", "reason_filter": "transcribing failed: down"}

    dry = await client.post("/console/api/retries", json=body, headers=OPERATOR)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True
    assert (dry.json()["matched"], dry.json()["retried"]) == (3, 2)
    assert list(dry.json()["not_retryable"]) == [outage[2]]
    assert (await _row(engine, "SELECT status FROM tasks WHERE id = :id", id=outage[0]))[
        0
    ] == "failed"

    real = await client.post(
        "/console/api/retries",
        json={**body, "dry_run": False, "reason": "outage over"},
        headers=OPERATOR,
    )
    assert (real.json()["matched"], real.json()["retried"]) == (3, 2)
    statuses = {
        task_id: (await _row(engine, "SELECT status FROM tasks WHERE id = :id", id=task_id))[0]
        for task_id in [*outage, other]
    }
    assert statuses == {
        outage[0]: "transcribing",
        outage[1]: "transcribing",
        outage[2]: "failed",
        other: "failed",
    }


async def test_cancel_fences_the_worker_holding_the_task(
    client: httpx.AsyncClient, engine: AsyncEngine, database_url: URL, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    async with engine.begin() as connection:  # a worker's claim: leased, in a stage
        await connection.execute(
            text(
                "UPDATE tasks SET status = 'transcribing', lease_owner = 'worker-1', "
                "lease_expires_at = now() + interval '1 minute' WHERE id = :id"
            ),
            {"id": task_id},
        )

    response = await client.post(
        f"/console/api/tasks/{task_id}/cancel", json={"reason": "stuck"}, headers=OPERATOR
    )

    assert response.status_code == 200, response.text
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        stored = await queue.store_transcription(
            connection, uuid.UUID(task_id), owner="worker-1", transcription="late"
        )
        renewed = await queue.renew_lease(
            connection, uuid.UUID(task_id), owner="worker-1", lease_seconds=30
        )
        completed = await queue.complete_task(
            connection, uuid.UUID(task_id), owner="worker-1", accuracy=90.0, mistakes=[]
        )
        failed = await queue.fail_task(
            connection, uuid.UUID(task_id), owner="worker-1", comment="transcribing failed: x"
        )
    finally:
        await connection.close()
    assert (stored, renewed, completed, failed) == (False, False, False, False)
    row = await _row(engine, "SELECT status, comment, result FROM tasks WHERE id = :id", id=task_id)
    assert tuple(row) == ("failed", "cancelled by an operator", None)
    detail = json.loads((await _last_event(engine, task_id)).detail)
    assert (detail["action"], detail["by"], detail["reason"]) == ("cancel", "alice", "stuck")

    again = await client.post(f"/console/api/tasks/{task_id}/cancel", json={}, headers=OPERATOR)
    assert again.status_code == 409


async def test_redeliver_queues_a_new_delivery_of_the_same_payload(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    async with engine.begin() as connection:
        delivery_id = await connection.scalar(
            text(
                "INSERT INTO webhook_deliveries (task_id, user_id, event_type, callback_url, "
                "receiver_host, payload, state, finished_at) SELECT id, user_id, "
                "'task.completed', 'https://lms.example/hook', 'lms.example', '{}'::bytea, "
                "'expired', now() FROM tasks WHERE id = :id RETURNING id"
            ),
            {"id": task_id},
        )

    response = await client.post(
        f"/console/api/deliveries/{delivery_id}/redeliver",
        json={"reason": "lost"},
        headers=OPERATOR,
    )

    assert response.status_code == 200, response.text
    new = await _row(
        engine, "SELECT * FROM webhook_deliveries WHERE id = :id", id=response.json()["id"]
    )
    assert (new.task_id, new.state, new.payload) == (uuid.UUID(task_id), "pending", b"{}")
    event = await _last_event(engine, task_id)
    assert (event.kind, event.stage, event.status) == ("retry", "webhook", "created")
    assert json.loads(event.detail) == {"action": "redeliver", "by": "alice", "reason": "lost"}
    missing = await client.post(
        f"/console/api/deliveries/{uuid.uuid4()}/redeliver", json={}, headers=OPERATOR
    )
    assert missing.status_code == 404


def console_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /console, read off its router."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        contexts = (
            route.effective_route_contexts()
            if hasattr(route, "effective_route_contexts")
            else [route]
        )
        for context in contexts:
            path = getattr(context, "path", "")
            if path.startswith("/console"):
                found += [
                    (method, path)
                    for method in sorted(getattr(context, "methods", None) or ())
                    if method != "HEAD"
                ]
    return found


def _concrete(path: str) -> str:
    return path.replace("{task_id}", str(uuid.uuid4())).replace("{delivery_id}", str(uuid.uuid4()))


async def test_every_console_route_refuses_a_non_operator(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    routes = console_routes(app)
    assert ("POST", "/console/api/retries") in routes
    assert ("GET", "/console") in routes
    assert len(routes) >= 15
    for method, path in routes:
        if path == "/console/login":  # the way in: its POST checks the token
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await client.request(method, _concrete(path), headers=headers, json={})
            assert response.status_code == 403, (method, path, headers)
        cookie = await client.request(
            method, _concrete(path), headers={"Cookie": f"{TOKEN_COOKIE}=wrong"}, json={}
        )
        assert cookie.status_code == 403, (method, path)
    login = await client.post("/console/login", data={"name": "x", "token": "wrong"})
    assert login.status_code == 403


async def test_an_untrusted_peer_is_refused_even_with_the_token(
    database_url: URL, clean_database: None
) -> None:
    settings = make_settings(operator_token=TOKEN, trusted_clients="10.0.0.0/8")
    app = create_app(settings, database_url=database_url)
    async with serve(app) as client:  # the in-process client is 127.0.0.1
        for method, path in console_routes(app):
            response = await client.request(method, _concrete(path), headers=OPERATOR, json={})
            assert response.status_code == 403, (method, path)
        retry = await client.post(f"/tasks/{uuid.uuid4()}/retry", headers=OPERATOR)
        assert retry.status_code == 403  # not an operator, and not trusted to name an owner


async def test_the_console_is_off_without_a_token(database_url: URL, clean_database: None) -> None:
    app = create_app(make_settings(), database_url=database_url)
    async with serve(app) as client:
        for method, path in console_routes(app):
            response = await client.request(method, _concrete(path), headers=OPERATOR, json={})
            assert response.status_code == 404, (method, path)


async def test_the_pages_render_and_forms_need_the_csrf_token(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, user_id: uuid.UUID
) -> None:
    task_id = await _task(client, user_id)
    await _fail_in_transcribing(engine, task_id, "transcribing failed: down (after 2 attempts)")
    login = await client.post("/console/login", data={"name": "bob", "token": TOKEN})
    assert login.status_code == 303
    assert TOKEN not in login.headers["set-cookie"]
    raw_token_cookie = await client.get("/console", headers={"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})
    assert raw_token_cookie.status_code == 403
    # The login set the cookies in the client's jar; every request below sends them.

    overview = await client.get("/console")
    assert overview.status_code == 200
    assert "<svg" in overview.text
    failures = await client.get("/console/failures")
    assert "transcribing failed: down<" in failures.text
    page = await client.get(f"/console/tasks/{task_id}")
    assert 'action="/console/tasks/' in page.text
    found = await client.get("/console/tasks", params={"q": str(user_id)})
    assert task_id in found.text

    forged = await client.post(f"/console/tasks/{task_id}/retry", data={"reason": "x"})
    assert forged.status_code == 403
    retried = await client.post(
        f"/console/tasks/{task_id}/retry",
        data={"reason": "x", CSRF_FIELD: csrf_token(settings)},
    )
    assert retried.status_code == 303
    assert (await _row(engine, "SELECT status FROM tasks WHERE id = :id", id=task_id))[
        0
    ] == "transcribing"


async def test_the_overview_and_failures_read_the_history(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    failed = await _task(client, user_id)
    waiting = await _task(client, uuid.uuid4())
    await _fail_in_transcribing(engine, failed, "transcribing failed: down (after 3 attempts)")

    figures = (await client.get("/console/api/overview", headers=OPERATOR)).json()

    assert figures["unfinished"] == {"created": 1}
    assert figures["waiting"] == 1
    assert sum(figures["failed_per_minute"]) == 1
    assert sum(figures["completed_per_minute"]) == 0
    assert [(d["stage"], d["runs"]) for d in figures["durations"]] == [("transcribing", 1)]
    assert figures["webhook_backlog"] == 0

    mine = await client.get(
        "/console/failures",
        params={"user_id": str(user_id), "stage": "transcribing"},
        headers=OPERATOR,
    )
    assert "transcribing failed: down<" in mine.text
    others = await client.get(
        "/console/failures", params={"user_id": str(uuid.uuid4())}, headers=OPERATOR
    )
    assert "transcribing failed" not in others.text
    assert waiting not in others.text


@pytest.mark.parametrize(
    ("path", "client_host"),
    [
        ("/console/api/retries", "127.0.0.1"),
        (f"/console/api/tasks/{uuid.uuid4()}/cancel", "127.0.0.1"),
        ("/console/failures/retry", "127.0.0.1"),
        ("/console/login", "203.0.113.9"),
        (f"/tasks/{uuid.uuid4()}/retry", "203.0.113.9"),
    ],
)
async def test_a_non_operator_s_body_is_not_read(
    app: FastAPI, client: httpx.AsyncClient, path: str, client_host: str
) -> None:
    """The headers decide, before a byte of a (here 24 MiB) body is asked for."""
    status, reads = await call_without_body(
        app,
        path,
        [(b"content-type", b"application/json")],
        client_host=client_host,
        content_length=24 * 1024 * 1024,
    )
    assert reads == 0
    assert status in (401, 403)


async def test_the_overview_stream_ends_at_the_stop_signal(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The process's own stop event ends it, not a library's process-wide flag."""
    app.state.runtime.stopping.set()
    # In-process responses are read whole: this returns only once the stream has ended
    # (the guard is far below the stream's own one-hour lifetime).
    async with asyncio.timeout(60):
        response = await client.get("/console/events", headers=OPERATOR)
    assert response.status_code == 200
    assert response.text.count("event: overview") == 1
