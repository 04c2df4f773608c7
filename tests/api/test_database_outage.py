"""While the database is unreachable, every route answers 503 with Retry-After, never 500;
once it is back, the same app serves again without a restart.

The server here is one of the test's own, stopped and started again by the test: the
session's server (and any shared one) is left alone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.db.embedded import EmbeddedPostgres, start_embedded_postgres
from app.db.migrations import upgrade_to_head
from app.main import create_app
from app.runtime import Runtime
from tests.api.helpers import legacy_upload, resource_upload, user_body
from tests.conftest import make_settings, serve
from tests.live import collect, live_server, sse_events
from tests.waiting import eventually


def _pg_ctl(embedded: EmbeddedPostgres, *arguments: str) -> None:
    server = embedded.server
    subprocess.run(
        [str(server.bin_path / "pg_ctl"), "-D", str(server.pgdata), "-w", *arguments],
        user=server.system_user,
        check=True,
        # A started server inherits pg_ctl's output: a pipe would never close.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def stop(embedded: EmbeddedPostgres) -> None:
    _pg_ctl(embedded, "-m", "fast", "stop")


def start(embedded: EmbeddedPostgres) -> None:
    # `restart` of a stopped server starts it with the options it last ran with.
    _pg_ctl(embedded, "-m", "fast", "restart")


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's tmp_path: a pytest session starting meanwhile on the machine
    # takes the others' permissions away from its base folder, and the server runs as
    # a user of its own.
    with tempfile.TemporaryDirectory(prefix="ilps-test-outage-pg-") as folder:
        embedded = start_embedded_postgres(Path(folder) / "data", "ilps_outage")
        try:
            yield embedded
        finally:
            _stop_for_good(embedded)


def _stop_for_good(embedded: EmbeddedPostgres) -> None:
    # Whichever postmaster runs now (the wheel knows only the one it started).
    subprocess.run(
        [str(embedded.server.bin_path / "pg_ctl"), "-D", str(embedded.server.pgdata),
         "-m", "immediate", "-w", "stop"],
        user=embedded.server.system_user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )  # fmt: skip


@pytest.fixture
async def client(own_postgres: EmbeddedPostgres) -> AsyncIterator[httpx.AsyncClient]:
    await upgrade_to_head(own_postgres.url)
    app = create_app(make_settings(), database_url=own_postgres.url)
    async with serve(app) as client:
        yield client


async def _every_route(
    client: httpx.AsyncClient, user_id: uuid.UUID, task_id: str
) -> dict[str, httpx.Response]:
    user = {"X-User-Id": str(user_id)}
    return {
        "GET /tasks": await client.get("/tasks", headers=user),
        "GET /tasks/{id}": await client.get(f"/tasks/{task_id}", headers=user),
        "GET /tasks/{id}/deliveries": await client.get(
            f"/tasks/{task_id}/deliveries", headers=user
        ),
        "POST /tasks": await resource_upload(client, user_id),
        "DELETE /tasks/{id}": await client.delete(f"/tasks/{task_id}", headers=user),
        "GET /tasks/{id}/events": await client.get(f"/tasks/{task_id}/events", headers=user),
        "legacy POST /": await client.post("/", json=user_body(user_id)),
        "legacy POST /{id}": await client.post(f"/{task_id}", json=user_body(user_id)),
        "legacy POST /transcribe": await legacy_upload(client, user_id),
        "legacy POST /{id}/stream": await client.post(
            f"/{task_id}/stream", json=user_body(user_id)
        ),
        "GET /health/ready": await client.get("/health/ready"),
    }


async def test_every_route_answers_503_while_the_database_is_away(
    own_postgres: EmbeddedPostgres, client: httpx.AsyncClient
) -> None:
    user_id = uuid.uuid4()
    created = await resource_upload(client, user_id)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    stop(own_postgres)
    try:
        answers = await _every_route(client, user_id, task_id)
        # Twice: the first request of an outage meets the pooled connections the
        # server cut, the next ones meet a server that refuses to connect at all.
        answers_again = await _every_route(client, user_id, task_id)
    finally:
        start(own_postgres)

    for route, answer in [*answers.items(), *answers_again.items()]:
        assert answer.status_code == 503, (route, answer.status_code, answer.text)
        if route != "GET /health/ready":  # for load balancers: its own body, no retry hint
            assert answer.headers["Retry-After"].isdigit(), route
            assert answer.json() == {
                "detail": "The database is momentarily unavailable; retry shortly."
            }, route

    # Back: the same app serves again; the upload made during the outage left nothing.
    async def listed() -> list[str] | None:
        answer = await client.get("/tasks", headers={"X-User-Id": str(user_id)})
        if answer.status_code != 200:
            return None
        return [item["id"] for item in answer.json()["items"]] or None

    assert await eventually(listed, message="the routes to work again") == [task_id]
    assert (
        await client.get(f"/tasks/{task_id}", headers={"X-User-Id": str(user_id)})
    ).status_code == 200
    assert (await resource_upload(client, user_id)).status_code == 201
    legacy_list = await client.post("/", json=user_body(user_id))
    assert legacy_list.status_code == 200
    assert len(legacy_list.json()) == 2


async def test_an_open_stream_outlives_an_outage_and_follows_the_task_after_it(
    own_postgres: EmbeddedPostgres,
) -> None:
    """The hub keeps heartbeating open streams while the database is away; once the LISTEN
    connection is back, it re-reads every followed task, so nothing that happened
    meanwhile is missed and the stream does not hang: here it ends at the deletion."""
    await upgrade_to_head(own_postgres.url)
    app = create_app(make_settings(), database_url=own_postgres.url)
    user = {"X-User-Id": str(uuid.uuid4())}
    with live_server(app) as base_url:
        runtime: Runtime = app.state.runtime
        async with httpx.AsyncClient(base_url=base_url) as client:
            created = await resource_upload(client, uuid.UUID(user["X-User-Id"]))
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            async with sse_events(base_url, "GET", f"/tasks/{task_id}/events", headers=user) as (
                response,
                events,
            ):
                assert response.status_code == 200
                first = await anext(events)
                assert json.loads(first.data)["status"] == "created"

                stop(own_postgres)
                try:
                    await eventually(
                        lambda: runtime.listener.state == "reconnecting",
                        message="the listener to lose the database",
                    )
                finally:
                    start(own_postgres)
                await eventually(
                    lambda: runtime.listener.state == "connected",
                    message="the listener to reconnect",
                )

                async def deleted() -> bool:
                    answer = await client.delete(f"/tasks/{task_id}", headers=user)
                    return answer.status_code == 204

                await eventually(deleted, message="the deletion once the database is back")
                async with asyncio.timeout(30):
                    rest = await collect(events)
    assert all(json.loads(event.data).get("status") != "created" for event in rest)
