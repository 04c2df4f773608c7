"""Database errors in logs without the values of the statement that failed.

Statements carry titles, user ids and callback URLs. The engine hides its parameters
(`hide_parameters`), but the driver's and the server's messages quote values too:
asyncpg's "invalid input for query argument $1: 'Please call Stella'", PostgreSQL's
`DETAIL: Key (user_id)=(...) already exists`. A logged traceback keeps its frames and
the errors' types and SQLSTATE codes; their messages are withheld.
"""

from __future__ import annotations

import logging
import traceback

import asyncpg
from sqlalchemy.exc import StatementError

from app.compat import replace_exception_message

WITHHELD = "message withheld: it may quote the statement's values"


def _database_error_text(error: BaseException) -> str | None:
    """The stand-in for a database error's message; None for any other exception."""
    if isinstance(error, StatementError):
        sqlstate = getattr(error.orig, "sqlstate", None)
    elif isinstance(error, asyncpg.PostgresError) or type(error).__module__.startswith(
        "sqlalchemy.dialects.postgresql.asyncpg"
    ):
        sqlstate = getattr(error, "sqlstate", None)
    else:
        return None
    return f"SQLSTATE {sqlstate} ({WITHHELD})" if sqlstate else f"({WITHHELD})"


def redacted_traceback(error: BaseException) -> str | None:
    """The traceback of `error` with every database error's message withheld; None
    when no database error is in its chain (the traceback is then left alone)."""
    rendered = traceback.TracebackException.from_exception(error)
    found = False
    pending: list[tuple[traceback.TracebackException, BaseException]] = [(rendered, error)]
    seen: set[int] = set()
    while pending:
        part, exception = pending.pop()
        if id(exception) in seen:
            continue
        seen.add(id(exception))
        stand_in = _database_error_text(exception)
        if stand_in is not None:
            replace_exception_message(part, stand_in)
            found = True
        if part.__cause__ is not None and exception.__cause__ is not None:
            pending.append((part.__cause__, exception.__cause__))
        if part.__context__ is not None and exception.__context__ is not None:
            pending.append((part.__context__, exception.__context__))
    return "".join(rendered.format()).rstrip("\n") if found else None


class RedactDatabaseErrors(logging.Filter):
    """Replaces a record's database error by its redacted traceback, which every
    formatter (text, JSON, GELF) writes in place of one it would render itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            text = redacted_traceback(record.exc_info[1])
            if text is not None:
                record.exc_info = None
                record.exc_text = text
        return True
