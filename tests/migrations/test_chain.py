"""The schema comes only from Alembic, every revision is reversible, and every way to the
head (an empty database, the original's, one built by the old root revision 0001) ends
in the same schema, which is the models' schema."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import models  # noqa: F401 - registers the tables on Base.metadata
from app.db.base import Base
from app.db.migrations import (
    ORIGINAL_REVISION,
    alembic_config,
    downgrade_to,
    downgrade_to_base,
    head_revision,
    upgrade_to_head,
)
from tests.migrations.catalog import catalog_facts
from tests.migrations.original import (
    ORIGINAL_SCHEMA_SQL,
    SCHEMA_0001,
    build_original,
    execute_sql,
    fetch,
)
from tests.postgres import SessionPostgres


async def _tables(url: URL) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names)


async def _revision(url: URL) -> list[str]:
    return [row["version_num"] for row in await fetch(url, "SELECT * FROM alembic_version")]


async def test_upgrade_downgrade_upgrade_on_an_empty_database(postgres: SessionPostgres) -> None:
    url = await postgres.create_database("ilps_migrations")
    try:
        await upgrade_to_head(url)
        assert {"tasks", "task_audio", "task_events", "alembic_version"} <= await _tables(url)

        await downgrade_to_base(url)
        assert await _tables(url) == {"alembic_version"}
        assert (await catalog_facts(url))["enums"] == []

        await upgrade_to_head(url)
        assert "tasks" in await _tables(url)
        assert head_revision() is not None
    finally:
        await postgres.drop_database(url)


async def test_the_root_revision_is_the_originals_schema(postgres: SessionPostgres) -> None:
    migrated = await postgres.create_database("ilps_root")
    original = await postgres.create_database("ilps_original")
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(migrated), ORIGINAL_REVISION)
        await execute_sql(original, ORIGINAL_SCHEMA_SQL)

        assert await catalog_facts(migrated) == await catalog_facts(original)
        assert await _revision(migrated) == [ORIGINAL_REVISION]
    finally:
        await postgres.drop_database(migrated)
        await postgres.drop_database(original)


async def test_a_database_built_by_the_old_0001_reaches_the_same_head(
    postgres: SessionPostgres,
) -> None:
    """Databases created by 0001 before it had a parent are stamped 0001 and go on from there."""
    old = await postgres.create_database("ilps_old_0001")
    fresh = await postgres.create_database("ilps_fresh")
    taken_over = await postgres.create_database("ilps_taken_over")
    try:
        await execute_sql(old, SCHEMA_0001.read_text())
        await upgrade_to_head(old)
        await upgrade_to_head(fresh)
        await build_original(taken_over, [])
        await upgrade_to_head(taken_over)

        expected = await catalog_facts(fresh)
        assert await catalog_facts(old) == expected
        assert await catalog_facts(taken_over) == expected
        assert await _revision(old) == [head_revision()]

        # And back: the old-0001 database can be handed to the original as well.
        await downgrade_to(old, ORIGINAL_REVISION)
        original = await postgres.create_database("ilps_original")
        try:
            await execute_sql(original, ORIGINAL_SCHEMA_SQL)
            assert await catalog_facts(old) == await catalog_facts(original)
        finally:
            await postgres.drop_database(original)
    finally:
        for url in (old, fresh, taken_over):
            await postgres.drop_database(url)


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_is_the_models_schema(postgres: SessionPostgres) -> None:
    """Autogenerate finds nothing to do: models and migrations have not drifted apart."""
    url = await postgres.create_database("ilps_models")
    engine = create_async_engine(url)
    try:
        await build_original(url, [])
        await upgrade_to_head(url)
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()
        await postgres.drop_database(url)
