"""One place that turns domain errors into JSON responses; services never raise HTTP errors."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from app.tasks.errors import TaskError

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 2


async def _task_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TaskError)
    return JSONResponse(
        status_code=error.status_code, content={"detail": error.detail}, headers=error.headers
    )


async def _database_error(_: Request, error: Exception) -> JSONResponse:
    """A lost database connection (a restart, a failover) is 503 and worth a retry.

    The pool is discarded with the failing connection, so the retry gets a fresh one.
    Anything else is a bug: 500, logged with its traceback.
    """
    assert isinstance(error, DBAPIError)
    if error.connection_invalidated:
        log.warning("database connection lost: %s", type(error.orig).__name__)
        return JSONResponse(
            status_code=503,
            content={"detail": "The database is momentarily unavailable; retry shortly."},
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    log.error("database error", exc_info=error)
    return JSONResponse(status_code=500, content={"detail": "Internal error."})


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
    return EchoSafeJSONResponse(
        status_code=422, content={"detail": jsonable_encoder(error.errors())}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TaskError, _task_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)
