"""The list statements return the columns the API writes out, in order, UUIDs as text."""

from __future__ import annotations

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.queries import queries
from app.tasks.repository import LEGACY_LIST_COLUMNS, PAGE_COLUMNS

PAGE_STATEMENTS = (
    "list_tasks_page",
    "list_tasks_page_in_status",
    "list_tasks_page_after",
    "list_tasks_page_in_status_after",
)


async def test_each_list_statement_returns_its_responses_columns(engine: AsyncEngine) -> None:
    expected = {"list_all_tasks": LEGACY_LIST_COLUMNS} | dict.fromkeys(
        PAGE_STATEMENTS, PAGE_COLUMNS
    )
    async with engine.connect() as pooled:
        connection = (await pooled.get_raw_connection()).driver_connection
        assert isinstance(connection, asyncpg.Connection)
        for name, columns in expected.items():
            statement = await connection.prepare(getattr(queries("tasks"), name).driver_sql)
            types = {column.name: column.type.name for column in statement.get_attributes()}
            assert tuple(types) == columns, name
            uuids = {types[column] for column in ("id", "user_id", "text_id") if column in types}
            assert uuids == {"text"}, name
