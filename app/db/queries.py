"""The named SQL statements of `app/db/sql/*.sql`, loaded once per process.

Every statement the service runs lives in one of those files under a header::

    -- name: claim_next_task
    -- Lease the oldest runnable task of the first user below the cap.
    WITH ...

The header's next comment lines are the statement's purpose; the statement runs to the
next header. Parameters are written `:name` (a `::type` cast is not one). A `Query` runs
on an asyncpg connection (`Database.driver()`, where asyncpg prepares it once per
connection and keeps it) with its parameters by name, or through a SQLAlchemy session as
`query.clause`. Values go to the driver as they are: JSON as a `str`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import TextClause, text

SQL_DIRECTORY = Path(__file__).with_name("sql")

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# The same rule as SQLAlchemy's `text()`: a colon not preceded by a colon or a word
# character and not followed by another colon starts a parameter.
_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_STRING_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|--[^\n]*")
# Strings and comments first, so a parameter is only found outside them.
_LEXEME = re.compile(f"{_STRING_OR_COMMENT.pattern}|{_PARAMETER.pattern}")


@dataclass(frozen=True)
class Query:
    """One named statement: its text with `:name` parameters and asyncpg's `$n` form."""

    name: str
    purpose: str
    sql: str
    driver_sql: str = field(repr=False)
    parameters: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, body: str) -> Query:
        lines = body.strip("\n").splitlines()
        purpose_lines: list[str] = []
        while lines and lines[0].startswith("--"):
            purpose_lines.append(lines.pop(0).removeprefix("--").strip())
        sql = "\n".join(lines).strip()
        if not purpose_lines or not sql:
            raise ValueError(f"query {name!r} needs a purpose comment and a statement")
        parameters: list[str] = []

        def numbered(match: re.Match[str]) -> str:
            if match.group(0).startswith(("'", "--")):
                return match.group(0)
            parameter = match.group(1)
            if parameter not in parameters:
                parameters.append(parameter)
            return f"${parameters.index(parameter) + 1}"

        driver_sql = _LEXEME.sub(numbered, sql)
        return cls(name, " ".join(purpose_lines), sql, driver_sql, tuple(parameters))

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        missing = [name for name in self.parameters if name not in values]
        extra = [name for name in values if name not in self.parameters]
        if missing or extra:
            raise TypeError(f"query {self.name!r}: missing {missing}, unexpected {extra}")
        return [values[name] for name in self.parameters]

    @functools.cached_property
    def clause(self) -> TextClause:
        """The statement for a SQLAlchemy session (`session.execute(query.clause, {...})`)."""

        # `text()` reads a colon inside a string or a comment as a parameter too.
        def escaped(match: re.Match[str]) -> str:
            found = match.group(0)
            return found.replace(":", "\\:") if found.startswith(("'", "--")) else found

        return text(_LEXEME.sub(escaped, self.sql))

    async def fetch(self, connection: asyncpg.Connection, **values: Any) -> list[Any]:
        return list(await connection.fetch(self.driver_sql, *self.arguments(values)))

    async def fetchrow(self, connection: asyncpg.Connection, **values: Any) -> Any:
        return await connection.fetchrow(self.driver_sql, *self.arguments(values))

    async def fetchval(self, connection: asyncpg.Connection, **values: Any) -> Any:
        return await connection.fetchval(self.driver_sql, *self.arguments(values))

    async def execute(self, connection: asyncpg.Connection, **values: Any) -> str:
        result: str = await connection.execute(self.driver_sql, *self.arguments(values))
        return result


class Queries:
    """The statements of one `.sql` file, by name: `queries("queue").claim_next_task`."""

    def __init__(self, source: str, statements: Mapping[str, Query]) -> None:
        self.source = source
        self._statements = dict(statements)

    def __getattr__(self, name: str) -> Query:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"{self.source}.sql has no query named {name!r}") from None

    def __iter__(self) -> Iterator[Query]:
        return iter(self._statements.values())


def parse(source: str, content: str) -> Queries:
    """The named statements of one file's `content`; anything before the first header is
    the file's own description and is skipped."""
    headers = list(_HEADER.finditer(content))
    statements: dict[str, Query] = {}
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        name = header.group("name")
        if name in statements:
            raise ValueError(f"{source}.sql names {name!r} twice")
        end = following.start() if following is not None else len(content)
        statements[name] = Query.parse(name, content[header.end() : end])
    return Queries(source, statements)


@functools.cache
def queries(source: str) -> Queries:
    """The statements of `app/db/sql/<source>.sql`, read and parsed on first use."""
    path = SQL_DIRECTORY / f"{source}.sql"
    return parse(source, path.read_text(encoding="utf-8"))


def all_sources() -> list[str]:
    """Every `.sql` file's name, for the tests that check each statement against the schema."""
    return sorted(path.stem for path in SQL_DIRECTORY.glob("*.sql"))
