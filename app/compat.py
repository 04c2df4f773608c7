"""Every place the service relies on a library's private attribute, one function each.

Each seam names what it relies on; tests/unit/test_compat.py exercises each against the
installed library, so an upgrade that moves one fails there by name rather than
somewhere downstream. Imports nothing of the application.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import httpcore
    import httpx
    from starlette.datastructures import FormData
    from starlette.requests import Request

FileClass = TypeVar("FileClass", bound=type)


def keep_parsed_form(request: Request, form: FormData) -> None:
    """Make `request.form()` return `form` without reading the body.

    Relies on Starlette's `Request` caching its parsed form in `_form` (and closing it
    with the request); FastAPI reads a route's form through `request.form()`.
    """
    request._form = form


def served_inline(file_class: FileClass) -> FileClass:
    """Mark a file-like class whose methods Starlette's `UploadFile` may call inline.

    Relies on `UploadFile` reading `SpooledTemporaryFile`'s private `_rolled` to tell a
    file still in memory (called on the event loop) from one on disk (called in a
    worker thread); a file without the attribute counts as on disk.
    """
    file_class._rolled = False  # type: ignore[attr-defined]
    return file_class


def replace_connection_pool(
    transport: httpx.AsyncHTTPTransport, pool: httpcore.AsyncConnectionPool
) -> None:
    """Send every request of `transport` through `pool`.

    Relies on httpx's `AsyncHTTPTransport` holding its httpcore pool in `_pool`: httpx
    takes no network backend of its own, so a pool built with one replaces its pool.
    """
    transport._pool = pool


def connection_socket(connection: Any) -> Any:
    """The socket under an asyncpg connection (asyncio's stand-in for it), or None.

    Relies on asyncpg's `Connection` keeping its asyncio transport in `_transport`;
    asyncpg has no public way to the socket. None rather than an error if that
    changes: the socket options tuned through it are a refinement, not a requirement.
    """
    transport = getattr(connection, "_transport", None)
    return transport.get_extra_info("socket") if transport is not None else None


def replace_exception_message(part: traceback.TracebackException, message: str) -> None:
    """Render `part` with `message` in place of its exception's own.

    Relies on `TracebackException` keeping the message it writes after the type in
    `_str`; the stdlib has no public way to render a traceback with another message.
    """
    part._str = message  # type: ignore[attr-defined]
