"""The lists write their bodies straight from the rows (app/api/listing.py): byte for byte
what the response models produced when FastAPI validated and serialized every row."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.listing import (
    LEGACY_LIST_FIELDS,
    PAGE_FIELDS,
    legacy_list_body,
    task_page_body,
)
from app.api.schemas import LegacyTaskSummary, TaskPageResponse, TaskSummary
from app.db.models import TITLE_MAX_LENGTH, Task
from app.db.status import TaskStatus
from app.tasks import repository
from tests.api.helpers import user_body

LEGACY_LIST = TypeAdapter(list[LegacyTaskSummary])

# What a learner, the original service's database or the feedback service may have left.
TITLES = [
    "Please call Stella",
    "Ünïcödé «ß» ñ — 中文 עברית",
    "😀 emoji and a \U0010fffd plane-16 character",
    'quote " backslash \\ slash / <b>&amp;</b>',
    "tab\tnewline\ncarriage\rbell\x07unit\x1fdelete\x7f",
    "line\u2028paragraph\u2029bom\ufeffnbsp\u00a0",
    "x" * TITLE_MAX_LENGTH,
]
ACCURACIES: list[float | None] = [
    None, 0.0, 100.0, 87.5, 33.333333333333336, 0.1 + 0.2, 99.99999999999999, 1e-7, 1.5e-5,
    0.0001, 5e-324, 12.0,
]  # fmt: skip
COMMENTS = [None, "", 'transcribing failed: the service answered HTTP 404: "Text not found."']
MISTAKES: list[Any] = [None, [], [{"type": "Replacement", "value": "ɪ?"}]]
BASE = datetime(2026, 11, 27, 10, 15, tzinfo=UTC)
# Whole seconds (no fraction is written), 120 ms (trailing zeros are), a single microsecond.
FRACTIONS = [timedelta(0), timedelta(microseconds=120_000), timedelta(microseconds=5)]


async def insert_awkward_tasks(engine: AsyncEngine, user_id: uuid.UUID) -> None:
    statuses = itertools.cycle(TaskStatus)
    rows = []
    for n, (title, accuracy) in enumerate(itertools.product(TITLES, ACCURACIES)):
        created = BASE - timedelta(minutes=n) + FRACTIONS[n % len(FRACTIONS)]
        finished = n % 2 == 0
        rows.append(
            {
                "user_id": user_id,
                "text_id": uuid.uuid4(),
                "title": title,
                "status": next(statuses).value,
                "accuracy": accuracy,
                "comment": COMMENTS[n % len(COMMENTS)],
                "mistakes": MISTAKES[n % len(MISTAKES)],
                "result": "p l i z" if finished else None,
                # Written in another zone: the database keeps the instant, the lists show UTC.
                "created_at": created.astimezone(timezone(timedelta(hours=-9, minutes=-30))),
                "updated_at": created + FRACTIONS[(n + 1) % len(FRACTIONS)],
                "completed_at": created + timedelta(seconds=9.5) if finished else None,
            }
        )
    # Two tasks created at the same instant: the id breaks the tie, on both sides.
    rows[1]["created_at"] = rows[2]["created_at"]
    async with engine.begin() as connection:
        await connection.execute(insert(Task), rows)


async def stored_tasks(
    engine: AsyncEngine, user_id: uuid.UUID, status: str | None = None
) -> Sequence[Task]:
    query = select(Task).where(Task.user_id == user_id)
    if status is not None:
        query = query.where(Task.status == status)
    async with AsyncSession(engine) as session:
        return (await session.scalars(query.order_by(Task.created_at.desc(), Task.id.desc()))).all()


def test_the_lists_read_their_models_fields_in_order() -> None:
    assert PAGE_FIELDS == repository.PAGE_COLUMNS
    assert LEGACY_LIST_FIELDS == repository.LEGACY_LIST_COLUMNS


async def test_legacy_list_is_what_the_model_wrote(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    await insert_awkward_tasks(engine, user_id)
    expected = LEGACY_LIST.dump_json(
        [LegacyTaskSummary.model_validate(task) for task in await stored_tasks(engine, user_id)]
    )

    response = await client.post("/", json=user_body(user_id))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()) == len(TITLES) * len(ACCURACIES)
    assert response.content == expected


async def test_every_page_is_what_the_model_wrote(
    client: httpx.AsyncClient, engine: AsyncEngine, user_id: uuid.UUID
) -> None:
    await insert_awkward_tasks(engine, user_id)
    for status in (None, TaskStatus.COMPLETED.value):
        tasks = await stored_tasks(engine, user_id, status)
        query = f"limit=7&status={status}" if status else "limit=7"
        cursor: str | None = None
        pages = 0
        for start in range(0, len(tasks), 7):
            path = f"/tasks?{query}" + (f"&cursor={cursor}" if cursor else "")
            response = await client.get(path, headers={"X-User-Id": str(user_id)})
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            cursor = response.json()["next_cursor"]
            expected = TaskPageResponse(
                items=[TaskSummary.model_validate(task) for task in tasks[start : start + 7]],
                next_cursor=cursor,
            )
            assert response.content == expected.model_dump_json().encode()
            pages += 1
        assert cursor is None
        assert pages == -(-len(tasks) // 7)


async def test_the_openapi_document_still_names_the_list_models(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    legacy = document["paths"]["/"]["post"]["responses"]["200"]["content"]["application/json"]
    page = document["paths"]["/tasks"]["get"]["responses"]["200"]["content"]["application/json"]
    assert legacy["schema"]["items"]["$ref"].endswith("/LegacyTaskSummary")
    assert page["schema"]["$ref"].endswith("/TaskPageResponse")


# Values a row can hold that PostgreSQL accepts: no NUL or lone surrogate in text.
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
_instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    title=_text,
    accuracy=st.none() | st.floats(min_value=0, max_value=100),
    created_at=_instants,
    comment=st.none() | _text,
    completed_at=st.none() | _instants,
)
def test_any_row_encodes_as_the_model_would(
    title: str,
    accuracy: float | None,
    created_at: datetime,
    comment: str | None,
    completed_at: datetime | None,
) -> None:
    task_id, user_id, text_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    legacy_row = (str(task_id), "completed", title, accuracy, created_at)
    page_row = (
        str(task_id), str(user_id), str(text_id), title, "failed", accuracy, comment,
        created_at, created_at, completed_at,
    )  # fmt: skip

    legacy_fields = dict(zip(LEGACY_LIST_FIELDS, legacy_row, strict=True))
    page_fields = dict(zip(PAGE_FIELDS, page_row, strict=True))
    legacy_model = LegacyTaskSummary.model_validate(legacy_fields)
    page_model = TaskPageResponse(items=[TaskSummary.model_validate(page_fields)], next_cursor=None)
    assert legacy_list_body([legacy_row]) == LEGACY_LIST.dump_json([legacy_model])
    assert task_page_body([page_row], None) == page_model.model_dump_json().encode()
