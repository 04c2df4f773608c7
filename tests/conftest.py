"""Shared fixtures: one real PostgreSQL per session, a migrated database, the app over ASGI."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import STAGES, Settings
from app.db.migrations import upgrade_to_head
from app.logs import ContextFilter, JsonFormatter
from app.main import create_app
from tests.fakes import FakeServices, running_fakes
from tests.live import LiveService, live_server
from tests.postgres import SessionPostgres, session_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[SessionPostgres]:
    with session_postgres() as server:
        yield server


@pytest.fixture(scope="session")
async def database_url(postgres: SessionPostgres) -> AsyncIterator[URL]:
    """One migrated database for the session; tests truncate it, they do not recreate it."""
    url = await postgres.create_database()
    await upgrade_to_head(url)
    yield url
    await postgres.drop_database(url)


@pytest.fixture(scope="session")
async def engine(database_url: URL) -> AsyncIterator[AsyncEngine]:
    """A test-side engine to look at the database directly."""
    engine = create_async_engine(database_url, pool_pre_ping=True)  # survives restart tests
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=False)
async def clean_database(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE tasks CASCADE"))


DISCARD_PORT = 9  # nothing listens there: calls fail at once with "connection refused"


def make_settings(**overrides: Any) -> Settings:
    """Settings for an in-test app, ignoring any `.env` of the developer."""
    # No workers unless a test asks: API tests look at tasks as they were created. Audio
    # services point at the discard port, so no sandbox starts unless a test asks for one.
    values: dict[str, Any] = {"debug_mode": True, "db_pool_size": 5, "worker_concurrency": 0}
    # Without workers tasks stay unfinished, and many tests create more of one user than
    # the product's cap; the caps have their own tests (tests/api/test_user_caps.py).
    values["max_unfinished_tasks_per_user"] = 100_000
    for stage in STAGES:
        values[f"service_{stage}"] = {"host": "127.0.0.1", "port": DISCARD_PORT}
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process (not for open-ended streams)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://task-manager") as client:
            yield client


@pytest.fixture
def app(settings: Settings, database_url: URL, clean_database: None) -> FastAPI:
    return create_app(settings, database_url=database_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as client:
        yield client


@pytest.fixture
def user_id() -> uuid.UUID:
    return uuid.uuid4()


async def count_rows(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        value = await connection.scalar(text(f"SELECT count(*) FROM {table}"))
    return int(value or 0)


@pytest.fixture(scope="session")
def fake_services() -> Iterator[FakeServices]:
    with running_fakes() as fakes:
        yield fakes


@pytest.fixture
def fakes(fake_services: FakeServices) -> FakeServices:
    fake_services.reset()
    return fake_services


def pipeline_settings(fakes: FakeServices, **overrides: Any) -> Settings:
    """Fast retries and short leases, so failure paths finish in well under a second."""
    values: dict[str, Any] = {
        **fakes.settings(),
        "worker_concurrency": 4,
        "worker_poll_seconds": 1.0,
        "worker_lease_seconds": 3.0,
        "pipeline_backoff_base_seconds": 0.05,
        "pipeline_backoff_max_seconds": 0.2,
        "pipeline_max_attempts": 4,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
def live(settings: Settings, database_url: URL, clean_database: None) -> Iterator[LiveService]:
    app = create_app(settings, database_url=database_url)
    with live_server(app) as base_url:
        yield LiveService(app=app, base_url=base_url)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous_level)


def parsed_json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
