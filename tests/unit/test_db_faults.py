"""Database faults read from class and SQLSTATE (app/db/faults.py), never from text."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi as adapter
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.db.faults import (
    describe,
    is_database_error,
    is_database_unavailable,
    is_retryable_database_error,
    sqlstate,
)


def adapted(driver_error: Exception, dbapi_class: type[adapter.Error] = adapter.Error) -> Exception:
    """What SQLAlchemy's asyncpg adapter raises: its DBAPI error from the driver's."""
    try:
        raise dbapi_class(str(driver_error), driver_error) from driver_error
    except adapter.Error as error:
        return error


def wrapped(
    driver_error: Exception,
    wrapper: type[DBAPIError] = OperationalError,
    *,
    invalidated: bool = False,
    dbapi_class: type[adapter.Error] = adapter.Error,
) -> DBAPIError:
    """What SQLAlchemy raises to the application, the statement in its text."""
    return wrapper(
        "SELECT connection FROM connections",
        {},
        adapted(driver_error, dbapi_class),
        connection_invalidated=invalidated,
    )


UNAVAILABLE = {
    "refused": ConnectionRefusedError(111, "refused"),
    "socket missing": FileNotFoundError(2, "no socket"),
    "connect timeout": TimeoutError(),
    "pool timeout": PoolTimeout("QueuePool limit"),
    "closed connection": asyncpg.ConnectionDoesNotExistError("gone"),
    "asyncpg interface": asyncpg.InterfaceError("closed"),
    "08006": asyncpg.exceptions.ConnectionFailureError("x"),
    "57P01": asyncpg.exceptions.AdminShutdownError("x"),
    "57P02": asyncpg.exceptions.CrashShutdownError("x"),
    "57P03": asyncpg.exceptions.CannotConnectNowError("x"),
    "53300": asyncpg.exceptions.TooManyConnectionsError("x"),
    "25006": asyncpg.exceptions.ReadOnlySQLTransactionError("x"),
    "wrapped 57P01": wrapped(asyncpg.exceptions.AdminShutdownError("x")),
    "wrapped 25006": wrapped(asyncpg.exceptions.ReadOnlySQLTransactionError("x")),
    "wrapped closed": wrapped(
        asyncpg.ConnectionDoesNotExistError("x"), InterfaceError, dbapi_class=adapter.InterfaceError
    ),
    "invalidated": wrapped(asyncpg.exceptions.PostgresError("x"), invalidated=True),
    "adapter's own InterfaceError": adapter.InterfaceError("closed"),  # type: ignore[no-untyped-call]
}
NOT_UNAVAILABLE = {
    "unique violation": asyncpg.exceptions.UniqueViolationError("connection"),
    "syntax error": asyncpg.exceptions.PostgresSyntaxError("connection"),
    "bad argument (asyncpg DataError)": asyncpg.exceptions.DataError("connection"),
    "wrapped unique violation": wrapped(
        asyncpg.exceptions.UniqueViolationError("connection lost"), IntegrityError
    ),
    "wrapped bad argument": wrapped(
        asyncpg.exceptions.DataError("connection"),
        InterfaceError,
        dbapi_class=adapter.InterfaceError,
    ),
    "a bug": ValueError("connection"),
    "serialization failure": asyncpg.exceptions.SerializationError("x"),
}


@pytest.mark.parametrize("error", UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_outages_are_unavailable_and_retryable(error: Exception) -> None:
    assert is_database_unavailable(error)
    assert is_retryable_database_error(error)


@pytest.mark.parametrize("error", NOT_UNAVAILABLE.values(), ids=NOT_UNAVAILABLE.keys())
def test_other_errors_are_not_unavailable_whatever_their_text(error: Exception) -> None:
    assert not is_database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.SerializationError("x"),
        asyncpg.exceptions.DeadlockDetectedError("x"),
        wrapped(asyncpg.exceptions.LockNotAvailableError("x")),
    ],
    ids=["40001", "40P01", "wrapped 55P03"],
)
def test_conflicts_are_retryable_but_no_outage(error: Exception) -> None:
    assert is_retryable_database_error(error)
    assert not is_database_unavailable(error)


def test_the_sqlstate_is_unwrapped_and_described_without_the_statement() -> None:
    error = wrapped(asyncpg.exceptions.CannotConnectNowError("x"))

    assert sqlstate(error) == "57P03"
    assert describe(error) == "SQLSTATE 57P03"
    assert describe(ConnectionRefusedError()) == "ConnectionRefusedError"


DATABASE_ERRORS = {
    "driver": asyncpg.exceptions.UniqueViolationError("x"),
    "driver's bad argument": asyncpg.exceptions.DataError("x"),
    "driver's closed connection": asyncpg.ConnectionDoesNotExistError("x"),
    "adapter's": adapted(asyncpg.exceptions.UniqueViolationError("x")),
    "SQLAlchemy's": wrapped(asyncpg.exceptions.UniqueViolationError("x"), IntegrityError),
}
OTHER_ERRORS = {
    "refused": ConnectionRefusedError(111, "refused"),
    "pool timeout": PoolTimeout("QueuePool limit"),
    "a bug": ValueError("SQLSTATE 23505"),
}


@pytest.mark.parametrize("error", DATABASE_ERRORS.values(), ids=DATABASE_ERRORS.keys())
def test_errors_of_the_database_layer_are_told_by_class(error: Exception) -> None:
    assert is_database_error(error)


@pytest.mark.parametrize("error", OTHER_ERRORS.values(), ids=OTHER_ERRORS.keys())
def test_sockets_the_pool_and_bugs_are_no_database_errors(error: Exception) -> None:
    # Their text names no statement's values, so it may be logged as it is.
    assert not is_database_error(error)
