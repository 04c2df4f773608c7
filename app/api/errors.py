"""One place that turns domain errors into JSON responses; services never raise HTTP errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import UploadFile

from app.db.faults import describe, is_database_unavailable
from app.tasks.errors import TaskError

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 2


async def _task_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TaskError)
    return JSONResponse(
        status_code=error.status_code, content={"detail": error.detail}, headers=error.headers
    )


def database_unavailable_response() -> JSONResponse:
    """503 with Retry-After: the database is away (down, restarting, failing over, full)."""
    return JSONResponse(
        status_code=503,
        content={"detail": "The database is momentarily unavailable; retry shortly."},
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _database_error(_: Request, error: Exception) -> JSONResponse:
    """An outage (see app/db/faults.py) is 503 and worth a retry; anything else is a bug.

    A failing connection is discarded from the pool, so the retry gets a fresh one. A
    database error that is no outage is a 500, logged with its traceback; any other
    exception that is no outage goes on to the server's own 500.
    """
    if is_database_unavailable(error):
        log.warning("database unavailable: %s", describe(error))
        return database_unavailable_response()
    if isinstance(error, DBAPIError):
        log.error("database error", exc_info=error)
        return JSONResponse(status_code=500, content={"detail": "Internal error."})
    raise error


class EchoSafeJSONResponse(JSONResponse):
    """JSON that can always be encoded, whatever the client sent.

    A validation error echoes the input, and a form field decoded with the charset the
    client named (UTF-7, say) can hold a lone surrogate, which UTF-8 cannot encode.
    """

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", errors="replace")


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's own 422 shape, rendered so that no echoed input can turn it into a 500."""
    assert isinstance(error, RequestValidationError)
    # A file part sent where a plain field belongs is echoed by its name, not its contents.
    detail = jsonable_encoder(error.errors(), custom_encoder={UploadFile: _file_name})
    return EchoSafeJSONResponse(status_code=422, content={"detail": detail})


def _file_name(upload: UploadFile) -> str | None:
    return upload.filename


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TaskError, _task_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Errors that may mean the database is away: SQLAlchemy's, the driver's (raised on
    # the pipeline's raw connections), and the socket's (a refused or timed-out connect).
    for error_class in (
        DBAPIError,
        PoolTimeout,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
    ):
        app.add_exception_handler(error_class, _database_error)
