"""Where the schema stands, without loading Alembic: the repository's head read from the
migration scripts' source, and the revision the database records.

Start-up uses both to skip `alembic upgrade head` when it would do nothing (importing
Alembic and its environment costs more than the rest of the check together). Anything
this reading cannot state plainly answers None, and the caller runs Alembic as before.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import asyncpg

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"

# A server that does not answer by then is left to Alembic, which reports it as before.
CONNECT_SECONDS = 10.0

# The files Alembic reads as revisions (its own pattern for source-only directories).
_SCRIPT_NAME = re.compile(r"(?!\.\#|__init__)(.*\.py)$")


def _literal_assignments(source: str) -> dict[str, object]:
    """The module-level `name = <literal>` (annotated or not) of a script."""
    found: dict[str, object] = {}
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                found[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError):
                found[target.id] = ValueError  # not a literal: nothing plain to read
    return found


def _parents(value: object) -> tuple[str, ...] | None:
    """`down_revision` as a tuple of revisions; None when it is not plainly one."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def repository_head(versions: Path = VERSIONS) -> str | None:
    """The one revision no other script revises; None unless every script says it plainly.

    Branch labels and cross-branch dependencies would need Alembic's own reading: a
    script with either makes this answer None.
    """
    parents_of: dict[str, tuple[str, ...]] = {}
    for path in sorted(versions.iterdir()):
        if not path.is_file() or not _SCRIPT_NAME.match(path.name):
            continue
        values = _literal_assignments(path.read_text(encoding="utf-8"))
        revision = values.get("revision")
        parents = _parents(values.get("down_revision", ValueError))
        plain = values.get("branch_labels") is None and values.get("depends_on") is None
        if not isinstance(revision, str) or parents is None or not plain:
            return None
        if revision in parents_of:
            return None
        parents_of[revision] = parents
    revised = {parent for parents in parents_of.values() for parent in parents}
    if not revised <= parents_of.keys():
        return None  # a script revises one that is not there: Alembic would refuse
    heads = parents_of.keys() - revised
    return heads.pop() if len(heads) == 1 else None


async def recorded_revisions(dsn: str) -> list[str]:
    """The rows of `alembic_version` (none when the table does not exist yet)."""
    connection = await asyncpg.connect(dsn, timeout=CONNECT_SECONDS)
    try:
        if await connection.fetchval("SELECT to_regclass('alembic_version')") is None:
            return []
        rows = await connection.fetch("SELECT version_num FROM alembic_version")
        return [str(row["version_num"]) for row in rows]
    finally:
        await connection.close()
