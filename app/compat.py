"""Every place the service relies on a library's private attribute, one function each.

Each seam names what it relies on; tests/unit/test_compat.py exercises each against the
installed library, so an upgrade that moves one fails there by name rather than
somewhere downstream. Imports nothing of the application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
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
