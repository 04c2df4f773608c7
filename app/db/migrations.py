"""Apply the Alembic migrations from code (start-up, tests) with the same scripts as the CLI.

Alembic is imported by the functions that use it, not here: a service whose database is
already at head never loads it (`upgrade_at_start`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.revisions import CONNECT_SECONDS, recorded_revisions, repository_head
from app.db.url import asyncpg_dsn

if TYPE_CHECKING:
    from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The original task manager's last revision, the root of this chain: a database at it holds
# the original's schema, and `alembic downgrade` to it hands the database back.
ORIGINAL_REVISION = "c7e1b585e358"


def alembic_config(url: URL | None = None) -> Config:
    """The project's `alembic.ini`, optionally pointed at another database."""
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if url is not None:
        # Escape '%' because the value goes through ConfigParser interpolation.
        rendered = url.render_as_string(hide_password=False).replace("%", "%%")
        config.set_main_option("sqlalchemy.url", rendered)
    return config


@functools.cache  # the scripts do not change under a running process; readiness asks often
def head_revision() -> str | None:
    """The newest migration in the repository (Alembic's reading when the plain one fails)."""
    head = repository_head()
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(session: AsyncSession) -> str | None:
    """The migration the database is at (as recorded by Alembic)."""
    revision = await session.scalar(text("SELECT version_num FROM alembic_version"))
    return None if revision is None else str(revision)


async def serving_address(session: AsyncSession) -> tuple[str | None, int | None]:
    """The address of the server this session is on (None over a Unix socket)."""
    row = (await session.execute(text("SELECT host(inet_server_addr()), inet_server_port()"))).one()
    return row[0], row[1]


async def upgrade_to_head(url: URL) -> None:
    """`alembic upgrade head` against `url`; Alembic's async env runs its own loop, so thread it."""
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")


async def downgrade_to_base(url: URL) -> None:
    from alembic import command

    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")


async def downgrade_to(url: URL, revision: str) -> None:
    """`alembic downgrade <revision>`, e.g. `ORIGINAL_REVISION` to hand the database back."""
    from alembic import command

    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)


# A session-level advisory lock, held around the check and the upgrade, makes replicas
# that start together take turns: one upgrades, the others then find the head. Any
# fixed key will do, as long as nothing else uses it ("ILPSMIGR" in ASCII).
MIGRATION_LOCK_KEY = 0x494C50534D494752


async def _recorded_head(dsn: str) -> str | None:
    """The head when the database provably records it alone, else None (also on any error:
    then Alembic connects itself and reports the failure in its own words)."""
    head = repository_head()
    if head is None:
        return None
    try:
        recorded = await recorded_revisions(dsn)
    except Exception:  # any doubt means: let Alembic decide
        return None
    return head if recorded == [head] else None


def upgrade_at_start(url: URL) -> str | None:
    """`alembic upgrade head`, as the image ran it before the service, in this interpreter.

    `url` is the configured server's (the one the environment's settings name, which
    Alembic's env.py reads again). When `alembic_version` holds exactly the repository's
    head, the upgrade would change nothing, and Alembic is not loaded: returns that head.
    Otherwise, under the migration lock (`MIGRATION_LOCK_KEY`), looks again, then runs
    Alembic's own command line (`alembic upgrade head`): the same logging, the same
    refusal of the original's older revisions (one `FAILED:` line, exit status 255
    through SystemExit), the same takeover; returns None.
    """
    dsn = asyncpg_dsn(url)
    head = asyncio.run(_recorded_head(dsn))
    if head is not None:
        return head
    return asyncio.run(_upgrade_under_lock(dsn))


async def _upgrade_under_lock(dsn: str) -> str | None:
    try:
        lock = await asyncpg.connect(dsn, timeout=CONNECT_SECONDS)
    except Exception:  # Alembic connects itself and reports the failure in its own words
        await asyncio.to_thread(_alembic_upgrade)
        return None
    try:
        # On a connection of its own: Alembic's runs in a thread, with its own loop.
        await lock.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        head = await _recorded_head(dsn)  # another replica upgraded while this one waited
        if head is not None:
            return head
        await asyncio.to_thread(_alembic_upgrade)
        return None
    finally:
        await lock.close()  # ending the session releases the lock


def _alembic_upgrade() -> None:
    from alembic.config import main as alembic_main

    alembic_main(argv=["-c", str(PROJECT_ROOT / "alembic.ini"), "upgrade", "head"], prog="alembic")
    # env.py configured logging from alembic.ini (as the command line does); the service
    # configures its own next, and alembic's levels must not outlive the upgrade.
    for name in ("alembic", "alembic.util.messaging"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    sys.stderr.flush()
