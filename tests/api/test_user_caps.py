"""Per-user caps on creation: unfinished tasks and stored audio, refused with 429."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.config import Settings
from app.main import create_app
from app.tasks import service
from app.tasks.errors import QuotaExceeded
from app.tasks.service import NewTask, UserCaps
from tests.api.helpers import PCM_SAMPLE, legacy_upload, resource_upload
from tests.conftest import make_settings, serve
from tests.waiting import eventually

# Room for two PCM_SAMPLE uploads (8 KiB each), not three.
AUDIO_CAP_MB = 20 / 1024


@pytest.fixture
def settings() -> Settings:
    return make_settings(max_unfinished_tasks_per_user=2)


async def stored(engine: AsyncEngine, user_id: uuid.UUID) -> tuple[int, int, int]:
    """The user's tasks, audio rows and history rows."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    """
                    SELECT (SELECT count(*) FROM tasks WHERE user_id = :u),
                           (SELECT count(*) FROM task_audio a JOIN tasks t ON t.id = a.task_id
                            WHERE t.user_id = :u),
                           (SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id
                            WHERE t.user_id = :u)
                    """
                ),
                {"u": user_id},
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def finish_all(engine: AsyncEngine, user_id: uuid.UUID, *, ended: str = "now()") -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE tasks SET status = 'completed', completed_at = {ended} WHERE user_id = :u"
            ),
            {"u": user_id},
        )


async def test_unfinished_tasks_over_the_cap_are_refused_on_both_routes(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id = uuid.uuid4()
    assert (await resource_upload(client, user_id)).status_code == 201
    assert (await legacy_upload(client, user_id)).status_code == 200

    for refused in (await resource_upload(client, user_id), await legacy_upload(client, user_id)):
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        assert refused.json() == {
            "detail": "This user already has 2 unfinished tasks; retry when some have finished."
        }
    assert await stored(engine, user_id) == (2, 2, 2)  # nothing of the refused ones stays

    # Another user is not held back, and finished tasks free the user's slots.
    assert (await resource_upload(client, uuid.uuid4())).status_code == 201
    await finish_all(engine, user_id)
    assert (await resource_upload(client, user_id)).status_code == 201


async def test_an_idempotent_retry_is_answered_at_the_cap(client: httpx.AsyncClient) -> None:
    user_id = uuid.uuid4()
    headers, text_id = {"Idempotency-Key": "first"}, uuid.uuid4()
    first = await resource_upload(client, user_id, headers=headers, text_id=text_id)
    assert (await resource_upload(client, user_id)).status_code == 201

    again = await resource_upload(client, user_id, headers=headers, text_id=text_id)

    assert again.status_code == 200  # a replay, not a new task
    assert again.json()["id"] == first.json()["id"]


async def test_parallel_creations_do_not_both_pass_a_cap_of_one(
    engine: AsyncEngine, database_url: URL, clean_database: None
) -> None:
    settings = make_settings(max_unfinished_tasks_per_user=1, db_pool_size=8)
    user_id = uuid.uuid4()
    async with serve(create_app(settings, database_url=database_url)) as client:
        for _ in range(3):  # a few rounds: each one a race between eight uploads
            answers = await asyncio.gather(*(resource_upload(client, user_id) for _ in range(8)))
            codes = sorted(answer.status_code for answer in answers)
            assert codes == [201] + [429] * 7
            await finish_all(engine, user_id)
    async with engine.connect() as connection:
        created = await connection.scalar(
            text("SELECT count(*) FROM tasks WHERE user_id = :u"), {"u": user_id}
        )
    assert created == 3


async def test_a_creation_waits_for_the_users_creation_in_flight_and_counts_it(
    engine: AsyncEngine, clean_database: None
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    caps = UserCaps(max_unfinished=1, max_audio_bytes=2**40, audio_retention_hours=168)
    user_id = uuid.uuid4()

    def upload() -> NewTask:
        return NewTask(
            user_id=user_id,
            text_id=uuid.uuid4(),
            title="race",
            audio=PCM_SAMPLE,
            filename=None,
            content_type=None,
        )

    async with sessions() as first, sessions() as second:
        await service.create_task(first, upload(), caps=caps)  # not committed yet
        pid = await second.scalar(text("SELECT pg_backend_pid()"))
        racing = asyncio.create_task(service.create_task(second, upload(), caps=caps))

        async def waiting_for_a_lock() -> bool:
            async with engine.connect() as connection:
                state = await connection.scalar(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid},
                )
            return bool(state == "Lock")

        await eventually(waiting_for_a_lock, message="the second creation to wait")
        await first.commit()
        with pytest.raises(QuotaExceeded):
            await racing
        await second.rollback()


async def test_stored_audio_over_the_quota_is_refused_until_retention_frees_it(
    engine: AsyncEngine, database_url: URL, clean_database: None
) -> None:
    settings = make_settings(max_stored_audio_mb_per_user=AUDIO_CAP_MB)
    user_id = uuid.uuid4()
    async with serve(create_app(settings, database_url=database_url)) as client:
        assert (await resource_upload(client, user_id)).status_code == 201
        assert (await legacy_upload(client, user_id)).status_code == 200

        refused = await resource_upload(client, user_id)
        assert refused.status_code == 429
        assert refused.json()["detail"].startswith("This user's stored audio is over the quota")
        # All of it belongs to unfinished tasks: free a retention period after they end.
        assert refused.headers["retry-after"] == str(168 * 3600)
        assert (await legacy_upload(client, user_id)).status_code == 429
        assert await stored(engine, user_id) == (2, 2, 2)

        # Ended 167 h ago: the audio goes in about an hour.
        await finish_all(engine, user_id, ended="now() - interval '167 hours'")
        refused = await resource_upload(client, user_id)
        assert refused.status_code == 429
        assert 3500 <= int(refused.headers["retry-after"]) <= 3600

        # Another user's audio counts for them alone; once purged, uploads pass again.
        assert (await resource_upload(client, uuid.uuid4())).status_code == 201
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "DELETE FROM task_audio a USING tasks t "
                    "WHERE a.task_id = t.id AND t.user_id = :u"
                ),
                {"u": user_id},
            )
        assert (await resource_upload(client, user_id, audio=PCM_SAMPLE)).status_code == 201
