"""Apply the Alembic migrations from code (start-up, tests) with the same scripts as the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncSession

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The original task manager's last revision, the root of this chain: a database at it holds
# the original's schema, and `alembic downgrade` to it hands the database back.
ORIGINAL_REVISION = "c7e1b585e358"


def alembic_config(url: URL | None = None) -> Config:
    """The project's `alembic.ini`, optionally pointed at another database."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if url is not None:
        # Escape '%' because the value goes through ConfigParser interpolation.
        rendered = url.render_as_string(hide_password=False).replace("%", "%%")
        config.set_main_option("sqlalchemy.url", rendered)
    return config


def head_revision() -> str | None:
    """The newest migration in the repository."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(session: AsyncSession) -> str | None:
    """The migration the database is at (as recorded by Alembic)."""
    revision = await session.scalar(text("SELECT version_num FROM alembic_version"))
    return None if revision is None else str(revision)


async def upgrade_to_head(url: URL) -> None:
    """`alembic upgrade head` against `url`; Alembic's async env runs its own loop, so thread it."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")


async def downgrade_to_base(url: URL) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")


async def downgrade_to(url: URL, revision: str) -> None:
    """`alembic downgrade <revision>`, e.g. `ORIGINAL_REVISION` to hand the database back."""
    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)
