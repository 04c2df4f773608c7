"""The PostgreSQL server of the test session: the environment's, or an embedded one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy import URL, make_url

from app.db.url import asyncpg_dsn

# Point the tests at an existing server with e.g. postgresql://postgres@127.0.0.1:5432/postgres;
# each session then creates (and drops) databases of its own there.
TEST_SERVER_VARIABLE = "MANAGER_TEST_DATABASE_URL"


@dataclass(frozen=True)
class SessionPostgres:
    """A server the tests may create databases on; `restart` is how fault tests bounce it."""

    admin_url: URL
    data_dir: Path | None  # set for the embedded server, which the tests may restart

    def database_url(self, name: str) -> URL:
        return self.admin_url.set(database=name)

    async def create_database(self, prefix: str = "ilps_test") -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        connection = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.database_url(name)

    async def drop_database(self, url: URL) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        finally:
            await connection.close()


@contextmanager
def session_postgres() -> Iterator[SessionPostgres]:
    """The environment's server when configured, else an embedded one in a temporary folder."""
    configured = os.environ.get(TEST_SERVER_VARIABLE)
    if configured:
        yield SessionPostgres(
            admin_url=make_url(configured).set(drivername="postgresql+asyncpg"), data_dir=None
        )
        return
    from app.db.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="ilps-test-pg-") as folder:
        data_dir = Path(folder) / "data"
        embedded = start_embedded_postgres(data_dir, "postgres")
        try:
            yield SessionPostgres(admin_url=embedded.url, data_dir=embedded.data_dir)
        finally:
            embedded.stop()
