"""The bodies of the two lists, written straight from the database's rows to JSON bytes.

FastAPI would validate each row into its response model and serialize the model: at
10 000 rows that second pass was most of the legacy list's time. The rows already hold
what the responses show, in their fields' order (`repository.PAGE_COLUMNS`,
`LEGACY_LIST_COLUMNS`), UUIDs as text; orjson writes them as pydantic's serializer does:
`Z` for UTC and microseconds only when there are some, the shortest float that reads back
the same, the same string escapes, `null` for None. tests/api/test_list_bodies.py holds
both to the same bytes on awkward rows. The routes keep `response_model=` for the
OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import Response

from app.api.schemas import LegacyTaskSummary, TaskSummary

PAGE_FIELDS = tuple(TaskSummary.model_fields)
LEGACY_LIST_FIELDS = tuple(LegacyTaskSummary.model_fields)
_OPTIONS = orjson.OPT_UTC_Z


class JSONBytes(Response):
    """A body already encoded as JSON."""

    media_type = "application/json"


def _objects(fields: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(fields, row, strict=True)) for row in rows]


def legacy_list_body(rows: Iterable[Sequence[Any]]) -> bytes:
    """`[LegacyTaskSummary, ...]` of rows holding `LEGACY_LIST_COLUMNS`."""
    return orjson.dumps(_objects(LEGACY_LIST_FIELDS, rows), option=_OPTIONS)


def task_page_body(rows: Iterable[Sequence[Any]], next_cursor: str | None) -> bytes:
    """`TaskPageResponse` of rows holding `PAGE_COLUMNS`."""
    page = {"items": _objects(PAGE_FIELDS, rows), "next_cursor": next_cursor}
    return orjson.dumps(page, option=_OPTIONS)
