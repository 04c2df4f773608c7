"""The named statements: how a file is read, and that each one is valid on the schema."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.queries import all_sources, parse, queries
from app.db.status import TERMINAL_SQL

SAMPLE = """
-- The file's own description, skipped.

-- name: one
-- Reads a row.
SELECT id FROM tasks WHERE id = :task_id AND status = 'a:b' AND created_at::date = :day
  AND user_id = :user_id OR id = :task_id;

-- name: two
-- Writes it,
-- in two lines.
UPDATE tasks SET title = :title  -- a trailing :comment is not a parameter
"""


def test_a_file_is_split_into_named_statements_with_their_purposes() -> None:
    parsed = parse("sample", SAMPLE)
    one, two = list(parsed)
    assert (one.name, one.purpose) == ("one", "Reads a row.")
    assert one.parameters == ("task_id", "day", "user_id")
    assert one.driver_sql == (
        "SELECT id FROM tasks WHERE id = $1 AND status = 'a:b' AND created_at::date = $2\n"
        "  AND user_id = $3 OR id = $1;"
    )
    assert (two.name, two.purpose) == ("two", "Writes it, in two lines.")
    assert two.parameters == ("title",)
    assert parsed.two is two


def test_the_sessions_form_takes_the_same_parameters() -> None:
    """A colon inside a string or a comment is no parameter for `text()` either."""
    one, two = list(parse("sample", SAMPLE))
    assert set(one.clause.compile().params) == set(one.parameters)
    assert "'a:b'" in str(one.clause)
    assert set(two.clause.compile().params) == {"title"}


def test_unknown_names_and_wrong_arguments_fail_loudly() -> None:
    parsed = parse("sample", SAMPLE)
    with pytest.raises(AttributeError, match=r"sample\.sql has no query named 'three'"):
        parsed.three  # noqa: B018
    with pytest.raises(TypeError, match=r"missing \['day', 'user_id'\], unexpected \['other'\]"):
        parsed.one.arguments({"task_id": 1, "other": 2})
    with pytest.raises(ValueError, match="names 'one' twice"):
        parse("sample", SAMPLE + "\n-- name: one\n-- Again.\nSELECT 1")
    with pytest.raises(ValueError, match="needs a purpose"):
        parse("sample", "-- name: bare\nSELECT 1")


def test_unfinished_tasks_are_filtered_with_the_terminal_literal() -> None:
    """The partial indexes on unfinished tasks carry this literal as their predicate."""
    for source in all_sources():
        for query in queries(source):
            for clause in ("status NOT IN (", "status IN ("):
                start = query.sql.find(clause)
                while start != -1:
                    literal = query.sql[start + len(clause) - 1 :].split(")", 1)[0] + ")"
                    if literal.startswith("('"):
                        assert literal == TERMINAL_SQL, (query.name, literal)
                    start = query.sql.find(clause, start + 1)


async def test_every_statement_is_valid_on_the_migrated_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as pooled:
        connection = (await pooled.get_raw_connection()).driver_connection
        assert isinstance(connection, asyncpg.Connection)
        for source in all_sources():
            for query in queries(source):
                # Preparing parses, resolves every name and plans: nothing runs.
                statement = await connection.prepare(query.driver_sql)
                assert len(statement.get_parameters()) == len(query.parameters), query.name
                # And through a session the same parameters, none read inside a string.
                assert set(query.clause._bindparams) == set(query.parameters), query.name
