"""The bodies of the two lists, written straight from the database's rows to JSON bytes.

FastAPI would validate each row into its response model and serialize the model: at
10 000 rows that second pass was most of the legacy list's time. The rows already hold
what the responses show, in their fields' order (`repository.PAGE_COLUMNS`,
`LEGACY_LIST_COLUMNS`), UUIDs as text; orjson writes them as pydantic's serializer does:
`Z` for UTC and microseconds only when there are some, the shortest float that reads back
the same, the same string escapes, `null` for None. tests/api/test_list_bodies.py holds
both to the same bytes on awkward rows and on any row hypothesis draws. The routes keep
`response_model=` for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import Response

from app.api.schemas import LegacyTaskSummary, TaskSummary

# The models' fields, in order: the columns must match them (a test checks).
PAGE_FIELDS = tuple(TaskSummary.model_fields)
LEGACY_LIST_FIELDS = tuple(LegacyTaskSummary.model_fields)
_OPTIONS = orjson.OPT_UTC_Z


class JSONBytes(Response):
    """A body already encoded as JSON."""

    media_type = "application/json"


# The objects are written out field by field: a dict display with constant keys is the
# cheapest way to build them (docs/performance.md). The names must follow the models'
# fields (and the columns) in order; the tests compare the bytes with the models'.


def legacy_list_body(rows: Iterable[Sequence[Any]]) -> bytes:
    """`[LegacyTaskSummary, ...]` of rows holding `LEGACY_LIST_COLUMNS`."""
    items = [
        {"id": id_, "status": status, "title": title, "accuracy": accuracy, "created_at": created}
        for id_, status, title, accuracy, created in rows
    ]
    return orjson.dumps(items, option=_OPTIONS)


def task_page_body(rows: Iterable[Sequence[Any]], next_cursor: str | None) -> bytes:
    """`TaskPageResponse` of rows holding `PAGE_COLUMNS`."""
    items = [
        {
            "id": id_,
            "user_id": user_id,
            "text_id": text_id,
            "title": title,
            "status": status,
            "accuracy": accuracy,
            "comment": comment,
            "created_at": created,
            "updated_at": updated,
            "completed_at": completed,
        }
        for (
            id_, user_id, text_id, title, status, accuracy, comment, created, updated, completed
        ) in rows
    ]  # fmt: skip
    return orjson.dumps({"items": items, "next_cursor": next_cursor}, option=_OPTIONS)
