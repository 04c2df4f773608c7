"""The engine and session factory of one process, built in the lifespan, never at import."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


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
    # asyncpg applies only when it opens a transaction) would cost BEGIN and COMMIT
    # round trips, about 1.7 times the latency of a one-query read on loopback.
    autocommit_sessions: async_sessionmaker[AsyncSession]

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(url: URL, *, pool_size: int, application_name: str) -> Database:
    """Build the engine.

    No `pool_pre_ping`: it costs a round trip per checkout. After a database restart the
    first statement on a dead connection fails, SQLAlchemy then discards the whole pool,
    and the pipeline retries its writes (see `TaskRunner._write`).
    """
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": application_name}},
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return Database(
        url=url,
        engine=engine,
        sessions=sessions,
        autocommit=autocommit,
        autocommit_sessions=async_sessionmaker(autocommit, expire_on_commit=False),
    )
