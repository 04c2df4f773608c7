"""The schema comes only from Alembic, and every revision is reversible."""

from __future__ import annotations

from sqlalchemy import URL, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrations import downgrade_to_base, head_revision, upgrade_to_head
from tests.postgres import SessionPostgres


async def _tables(url: URL) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names)


async def test_upgrade_downgrade_upgrade_on_an_empty_database(postgres: SessionPostgres) -> None:
    url = await postgres.create_database("ilps_migrations")
    try:
        await upgrade_to_head(url)
        assert {"tasks", "task_audio", "task_events", "alembic_version"} <= await _tables(url)

        await downgrade_to_base(url)
        assert await _tables(url) == {"alembic_version"}

        await upgrade_to_head(url)
        assert "tasks" in await _tables(url)
        assert head_revision() is not None
    finally:
        await postgres.drop_database(url)
