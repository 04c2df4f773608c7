"""The engine and session factory of one process, built in the lifespan, never at import."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import URL, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from app.db.faults import is_database_unavailable
from app.db.sessions import SessionOptions

# A pooled connection found closed (the server restarted, the socket dropped) is replaced
# before use, up to this many times: after a restart every idle connection is dead.
_CLOSED_CONNECTION_RETRIES = 8


@dataclass(frozen=True)
class Database:
    """Everything that talks to PostgreSQL through SQLAlchemy."""

    url: URL
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # The same pool without BEGIN/COMMIT: for writes that are one statement, one round trip.
    autocommit: AsyncEngine
    # Sessions on it: every statement commits on its own. For requests that only read,
    # but nothing enforces that: a read-only transaction (`postgresql_readonly`, which
    # asyncpg applies only when it opens a transaction) would add BEGIN and COMMIT round
    # trips to every read (see docs/performance.md).
    autocommit_sessions: async_sessionmaker[AsyncSession]
    # What every connection sets up (the pool's; the dedicated ones take the same).
    options: SessionOptions

    async def dispose(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection's asyncpg connection, for the named statements (`app.db.queries`).

        For statements that run thousands of times (the pipeline's): asyncpg
        prepares each once per connection and keeps it (its statement cache), and no
        SQLAlchemy compilation, cache lookup, result wrapping or `Connection` object is
        made per call. Statements run in autocommit (nothing here opens a transaction
        unless a statement says BEGIN). A connection found closed is replaced, and one that
        broke under a statement is discarded from the pool, not returned.
        """
        pooled = await self.engine.raw_connection()
        for _ in range(_CLOSED_CONNECTION_RETRIES):
            if not _asyncpg_of(pooled).is_closed():
                break
            await greenlet_spawn(pooled.invalidate)
            pooled = await self.engine.raw_connection()
        raw = _asyncpg_of(pooled)
        try:
            yield raw
        except BaseException as error:
            if (
                raw.is_closed()
                or not isinstance(error, asyncpg.PostgresError)
                or is_database_unavailable(error)
            ):
                # Closed, or a statement cut off midway (cancelled, interface error): the
                # protocol state is unknown, so the connection is not reused. A server that
                # is unavailable (shutting down, or a demoted primary refusing writes) is
                # left: the next connection finds it back, or finds the new primary.
                with contextlib.suppress(Exception):
                    await greenlet_spawn(pooled.invalidate)
            raise
        finally:
            # Back to the pool: its reset is a no-op here (SQLAlchemy's adapter opened no
            # transaction on it), so no greenlet is needed.
            pooled.close()


def _asyncpg_of(pooled: PoolProxiedConnection) -> asyncpg.Connection:
    raw = pooled.driver_connection
    assert isinstance(raw, asyncpg.Connection)
    return raw


def create_database(
    url: URL,
    *,
    pool_size: int,
    application_name: str,
    options: SessionOptions | None = None,
) -> Database:
    """Build the engine.

    No `pool_pre_ping`: it costs a round trip per checkout. After a database restart the
    first statement on a dead connection fails, SQLAlchemy then discards the whole pool,
    and the pipeline retries its writes (see `TaskRunner._write`).
    """
    options = options or SessionOptions()
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # A statement's error is logged without its values: titles, user ids, callback URLs.
        hide_parameters=True,
        connect_args=options.connect_args(application_name),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _tune(dbapi_connection: Any, _record: Any) -> None:
        options.tune_socket(dbapi_connection.driver_connection)

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return Database(
        url=url,
        engine=engine,
        sessions=sessions,
        autocommit=autocommit,
        autocommit_sessions=async_sessionmaker(autocommit, expire_on_commit=False),
        options=options,
    )
