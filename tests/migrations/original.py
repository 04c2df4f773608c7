"""The original task manager's database at its head revision, built by the tests' own SQL.

Written from what is known of the original's schema at c7e1b585e358, independently of
the migrations, so the tests can hold the migrations' result against it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import URL

from app.db.url import asyncpg_dsn

ORIGINAL_HEAD = "c7e1b585e358"
ORIGINAL_STATUSES = (
    "CREATED",
    "STARTED",
    "PREPROCESSING",
    "TRANSCRIBING",
    "EVALUATING",
    "COMPLETED",
    "FAILED",
)
UNFINISHED = frozenset(ORIGINAL_STATUSES) - {"COMPLETED", "FAILED"}
SCHEMA_0001 = Path(__file__).with_name("schema_0001.sql")

ORIGINAL_SCHEMA_SQL = f"""
CREATE TABLE alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('{ORIGINAL_HEAD}');
CREATE TYPE status AS ENUM ({", ".join(f"'{name}'" for name in ORIGINAL_STATUSES)});
CREATE TABLE tasks (
    id uuid NOT NULL,
    status status NOT NULL,
    user_id uuid NOT NULL,
    text_id uuid NOT NULL,
    result text,
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    comment text,
    title varchar(50) NOT NULL,
    accuracy real,
    mistakes json,
    CONSTRAINT tasks_pkey PRIMARY KEY (id),
    CONSTRAINT check_accuracy CHECK (accuracy >= 0.0 AND accuracy <= 100.0)
);
CREATE INDEX task_text_id_idx ON tasks USING hash (text_id);
CREATE INDEX task_user_id_idx ON tasks USING hash (user_id);
"""

# As the feedback service returned them, in its key order (jsonb will sort the keys).
MISTAKES_JSON = json.dumps(
    [
        {
            "type": "Replacement",
            "reference": {"position": 1, "value": "ɪ"},
            "actual": {"position": 1, "value": "i"},
        },
        {"type": "Insertion", "reference": None, "actual": {"position": 4, "value": "ə"}},
    ],
    ensure_ascii=False,
)


@dataclass(frozen=True)
class LegacyTask:
    """One row of the original's `tasks`."""

    status: str
    user_id: uuid.UUID
    created_at: datetime
    title: str = "Please call Stella"
    result: str | None = None
    accuracy: float | None = None
    mistakes: str | None = None  # JSON text, as stored
    comment: str | None = None
    completed_at: datetime | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    text_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


def legacy_tasks(user_id: uuid.UUID, other_user_id: uuid.UUID) -> list[LegacyTask]:
    """Tasks in every status for `user_id` (oldest first), and two of another user."""
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    return [
        LegacyTask(
            "COMPLETED",
            user_id,
            at(0),
            title="The North Wind and the Sun",
            result="p l iː z k ɔː l",
            accuracy=57.1,
            mistakes=MISTAKES_JSON,
            completed_at=at(1),
        ),
        LegacyTask(
            "FAILED",
            user_id,
            at(10),
            comment="feedback failed: Text not found.",
            completed_at=at(11),
        ),
        LegacyTask("FAILED", user_id, at(15), comment="Transcribing service unavailable"),
        LegacyTask("CREATED", user_id, at(20)),
        LegacyTask("STARTED", user_id, at(30)),
        LegacyTask("PREPROCESSING", user_id, at(40), comment="slow upload"),
        LegacyTask("TRANSCRIBING", user_id, at(50)),
        LegacyTask("EVALUATING", user_id, at(60), result="p l iː z"),
        LegacyTask(
            "COMPLETED",
            other_user_id,
            at(5),
            accuracy=100.0,
            mistakes="[]",
            result="k ɔː l",
            completed_at=at(6),
        ),
        LegacyTask(
            "COMPLETED",
            other_user_id,
            at(7),
            title="",
            accuracy=0.0,
            mistakes="null",
            completed_at=at(8),
        ),
    ]


async def build_original(url: URL, tasks: list[LegacyTask]) -> None:
    """The original's schema at its head, stamped, holding `tasks`."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(ORIGINAL_SCHEMA_SQL)
        await connection.executemany(
            """
            INSERT INTO tasks (id, status, user_id, text_id, result, created_at, completed_at,
                               comment, title, accuracy, mistakes)
            VALUES ($1, $2::status, $3, $4, $5, $6, $7, $8, $9, $10::real, $11::json)
            """,
            [
                (
                    task.id,
                    task.status,
                    task.user_id,
                    task.text_id,
                    task.result,
                    task.created_at,
                    task.completed_at,
                    task.comment,
                    task.title,
                    task.accuracy,
                    task.mistakes,
                )
                for task in tasks
            ],
        )
    finally:
        await connection.close()


async def execute_sql(url: URL, sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def fetch(url: URL, query: str, *args: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [dict(row) for row in await connection.fetch(query, *args)]
    finally:
        await connection.close()


async def alembic_revisions(url: URL) -> list[str]:
    return [row["version_num"] for row in await fetch(url, "SELECT * FROM alembic_version")]


def printed_lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    """What a command printed (stdout, then stderr), without blank lines."""
    return [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]


# All that `alembic upgrade head` (and so `start.py`) prints on a database at the original's
# 7c8979e05723: one line an operator can act on, no traceback.
REFUSAL_AT_7C8979E05723 = [
    "FAILED: this database is at revision 7c8979e05723 of the original task manager, "
    "older than its last revision c7e1b585e358: run the original's `alembic upgrade "
    "head` (with its own image) first, then this one"
]
