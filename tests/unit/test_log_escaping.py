"""What a client sends cannot forge a log line, and database errors carry no values."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from app.db.engine import create_database
from app.log_redaction import RedactDatabaseErrors, redacted_traceback
from app.logs import ContextFilter, JsonFormatter, TextFormatter, printable
from tests.conftest import parsed_json_lines


def test_control_characters_are_escaped() -> None:
    assert printable("/a\r\nINFO forged\x1b[2J\u2028") == "/a\\x0d\\x0aINFO forged\\x1b[2J\\u2028"
    assert printable("/tasks/ünïcode") == "/tasks/ünïcode"


def test_a_text_line_stays_one_line_but_a_traceback_keeps_its_lines() -> None:
    formatter = TextFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GET %s", ("/\r\nERR x",), None)
    assert "\n" not in formatter.format(record)
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "Traceback" in formatter.format(failed).splitlines()[1]


@pytest.fixture
def text_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(ContextFilter())
    logging.getLogger("app.access").addHandler(handler)
    yield stream
    logging.getLogger("app.access").removeHandler(handler)


async def test_a_cr_lf_in_the_path_does_not_forge_an_access_line(
    client: httpx.AsyncClient, text_lines: io.StringIO, json_lines: io.StringIO
) -> None:
    await client.get("/tasks%0D%0A2026-01-01 INFO app.access: GET /admin -> 200")

    lines = text_lines.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\x0d\\x0a2026-01-01" in lines[0]
    access = [line for line in parsed_json_lines(json_lines) if line["logger"] == "app.access"]
    assert "\r" not in str(access[0]["path"])
    assert "\n" not in str(access[0]["path"])


async def test_database_errors_carry_no_parameter_values(database_url: URL) -> None:
    database = create_database(database_url, pool_size=1, application_name="test-log-escaping")
    secret = "Stella"  # short enough for the driver to quote it whole in its message
    try:
        with pytest.raises(DBAPIError) as raised:
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT CAST(:value AS integer)"), {"value": secret})
    finally:
        await database.dispose()
    assert "[parameters" not in str(raised.value)  # the engine hides its parameters

    lines = io.StringIO()
    logger = logging.getLogger("test.database_errors")
    for formatter in (TextFormatter(), JsonFormatter()):
        handler = logging.StreamHandler(lines)
        handler.setFormatter(formatter)
        handler.addFilter(RedactDatabaseErrors())
        logger.addHandler(handler)
        try:
            logger.error("database error", exc_info=raised.value)
        finally:
            logger.removeHandler(handler)

    written = lines.getvalue()
    assert secret not in written
    assert written.count("DBAPIError") == 2  # the traceback is there, its values are not
    assert "message withheld" in written


def test_other_exceptions_keep_their_messages() -> None:
    assert redacted_traceback(ValueError("Stella")) is None
