"""What a database error means for the caller, read from its class and SQLSTATE alone.

Error text is never read: it changes between server versions and locales, and a
statement's text (which a DBAPIError carries) may contain the word "connection".

*Unavailable* errors say the server cannot serve anyone right now (down, restarting,
full, a standby or a demoted primary); the same statement is expected to succeed once
it is back, so the API answers 503 and the pipeline retries. *Retryable* errors add
the conflicts a second attempt resolves (serialization failure, deadlock, lock not
available), which concern one transaction, not the server.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# What SQLAlchemy raises to the application, its asyncpg adapter's own, and the driver's.
_DATABASE_ERRORS = (
    DBAPIError,
    AsyncAdapt_asyncpg_dbapi.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
# SQLSTATE class 08: connection exception (refused, lost, protocol violation).
_UNAVAILABLE_CLASSES = ("08",)
_UNAVAILABLE_CODES = frozenset(
    {
        "57P01",  # admin_shutdown: the server (or this backend) is shutting down
        "57P02",  # crash_shutdown: another backend crashed, every session is reset
        "57P03",  # cannot_connect_now: starting up, or in recovery
        "53300",  # too_many_connections
        "25006",  # read_only_sql_transaction: we reached a standby or a demoted primary
    }
)
_CONFLICT_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
    }
)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of `error`, or of the driver error a SQLAlchemy error wraps."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    # SQLAlchemy's asyncpg adapter keeps the asyncpg error as `__cause__` and copies its
    # code to `sqlstate`; asyncpg's own errors carry it as `sqlstate` too.
    code = getattr(error, "sqlstate", None)
    if code is None and isinstance(error.__cause__, asyncpg.PostgresError):
        code = error.__cause__.sqlstate
    return code if isinstance(code, str) else None


def is_database_unavailable(error: BaseException) -> bool:
    """Is the server unreachable or refusing everyone for now (not: is this statement wrong)?"""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        if error.orig is not None:
            error = error.orig
    if isinstance(error, AsyncAdapt_asyncpg_dbapi.Error):
        # SQLAlchemy's adapter raises its DBAPI errors from asyncpg's: judge that one.
        # Its InterfaceError without one is its own "the connection is closed".
        cause = error.__cause__
        if cause is None:
            return isinstance(error, AsyncAdapt_asyncpg_dbapi.InterfaceError)
        return _driver_unavailable(cause) or _code_unavailable(sqlstate(error))
    return _driver_unavailable(error) or _code_unavailable(sqlstate(error))


def is_retryable_database_error(error: BaseException) -> bool:
    """Would the same statement likely succeed a little later (unavailable, or a conflict)?"""
    return is_database_unavailable(error) or sqlstate(error) in _CONFLICT_CODES


def is_database_error(error: BaseException) -> bool:
    """Raised by SQLAlchemy's database layer or the driver, whose text may quote values."""
    return isinstance(error, _DATABASE_ERRORS)


def describe(error: BaseException) -> str:
    """SQLSTATE or class only: a DBAPIError's text carries the statement and its parameters."""
    code = sqlstate(error)
    return f"SQLSTATE {code}" if code else type(error).__name__


def _driver_unavailable(error: BaseException) -> bool:
    # OSError covers ConnectionRefusedError, socket errors and TimeoutError (asyncio's
    # too): a connect that did not finish in time; PoolTimeout, a checkout that did not.
    if isinstance(error, OSError | PoolTimeout):
        return True
    if isinstance(error, asyncpg.PostgresConnectionError | asyncpg.ConnectionDoesNotExistError):
        return True
    # asyncpg's InterfaceError proper is a closed connection or one in a broken state;
    # its subclasses that are usage errors (a bad argument) do not mean an outage.
    return type(error) is asyncpg.InterfaceError


def _code_unavailable(code: str | None) -> bool:
    return code is not None and (
        code.startswith(_UNAVAILABLE_CLASSES) or code in _UNAVAILABLE_CODES
    )
