"""Alembic environment (async): the URL comes from the caller or from the service settings."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import URL, make_url, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import models  # noqa: F401 - registers the tables on Base.metadata
from app.db.base import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> URL:
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return make_url(configured)
    # Run from the command line (`alembic upgrade head`): use the service's own settings.
    from app.config import load_settings
    from app.db.embedded import start_embedded_postgres
    from app.db.url import configured_database_url

    settings = load_settings()
    if settings.uses_embedded_database:
        return start_embedded_postgres(settings.db_embedded_data_dir, settings.db_postgres_name).url
    return configured_database_url(settings)


# The original task manager's revisions before its head, c7e1b585e358, which is this
# chain's root. Alembic would only say it "can't locate" them; the operator needs to know
# that the original's own image must first bring the database to its head.
ORIGINAL_HEAD = "c7e1b585e358"
ORIGINAL_OLDER_REVISIONS = (
    "defd820781f5",
    "d6a08a1eb0c1",
    "638b5cfed907",
    "5960e8216d49",
    "7c8979e05723",
)


def _refuse_older_original(connection: Connection) -> None:
    """One line (the CLI prints `FAILED: …`) instead of a traceback, before anything runs."""
    found: list[str] = []
    if connection.scalar(text("SELECT to_regclass('alembic_version')")) is not None:
        found = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    # Leave no transaction open: Alembic must begin (and commit) its own, the one that all
    # migrations run in; inside a caller's transaction it would commit nothing.
    connection.rollback()
    for revision in found:
        if revision in ORIGINAL_OLDER_REVISIONS:
            raise CommandError(
                f"this database is at revision {revision} of the original task manager, "
                f"older than its last revision {ORIGINAL_HEAD}: run the original's "
                f"`alembic upgrade head` (with its own image) first, then this one"
            )


def _run_migrations(connection: Connection) -> None:
    _refuse_older_original(connection)
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async_migrations() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    if config.config_file_name is not None and not config.get_main_option("sqlalchemy.url"):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_async_migrations())
