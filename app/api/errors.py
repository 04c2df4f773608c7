"""One place that turns domain errors into JSON responses; services never raise HTTP errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.tasks.errors import TaskError


async def _task_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TaskError)
    return JSONResponse(status_code=error.status_code, content={"detail": error.detail})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TaskError, _task_error)
