"""The lists read through the driver's rows, yet a connection a database restart cut is
still a 503 to retry (and the pool is renewed), never a 500."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import URL

from app.main import create_app
from tests.api.helpers import user_body
from tests.conftest import make_settings, serve
from tests.postgres import SessionPostgres


async def test_a_list_on_a_connection_the_restart_cut_is_a_503_then_answers(
    postgres: SessionPostgres, database_url: URL
) -> None:
    user_id = uuid.uuid4()
    # One pooled connection: the list after the restart gets the one the restart cut.
    settings = make_settings(db_pool_size=1)
    async with serve(create_app(settings, database_url=database_url)) as client:

        async def page() -> httpx.Response:
            return await client.get("/tasks", headers={"X-User-Id": str(user_id)})

        async def legacy_list() -> httpx.Response:
            return await client.post("/", json=user_body(user_id))

        for read in (page, legacy_list):
            assert (await read()).status_code == 200  # the pool holds a live connection
            await asyncio.to_thread(postgres.restart)

            cut = await read()
            assert cut.status_code == 503, cut.text
            assert cut.headers["Retry-After"] == "2"
            assert cut.json() == {
                "detail": "The database is momentarily unavailable; retry shortly."
            }
            assert (await read()).status_code == 200
