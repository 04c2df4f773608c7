"""Taking over a database of the original task manager in place, and handing it back.

Each test builds the original's schema at its head with the tests' own SQL, fills it with
tasks in every status the original knew, and runs the real migrations on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from alembic.util import CommandError
from sqlalchemy import URL

from app.db.migrations import (
    ORIGINAL_REVISION,
    PROJECT_ROOT,
    downgrade_to,
    head_revision,
    upgrade_to_head,
)
from app.main import create_app
from tests.api.helpers import legacy_upload, user_body
from tests.conftest import make_settings, pipeline_settings, serve
from tests.fakes import FEEDBACK_ACCURACY, FEEDBACK_MISTAKES, FakeServices, audio_for, new_marker
from tests.live import collect, live_server, sse_events
from tests.migrations.catalog import catalog_facts
from tests.migrations.original import (
    ORIGINAL_SCHEMA_SQL,
    REFUSAL_AT_7C8979E05723,
    LegacyTask,
    alembic_revisions,
    build_original,
    execute_sql,
    fetch,
    legacy_tasks,
    printed_lines,
)
from tests.postgres import SessionPostgres
from tests.waiting import eventually

UPGRADE_NOTE = (
    "This recording was being assessed when the service was upgraded and its audio was not "
    "kept; please record it again."
)
DOWNGRADE_NOTE_START = "This recording was being assessed when the service was rolled back"


@dataclass
class OriginalDatabase:
    url: URL
    user_id: uuid.UUID
    other_user_id: uuid.UUID
    tasks: list[LegacyTask]

    def of(self, user_id: uuid.UUID) -> list[LegacyTask]:
        """The user's tasks, newest first, as the legacy list orders them."""
        mine = [task for task in self.tasks if task.user_id == user_id]
        return sorted(mine, key=lambda task: task.created_at, reverse=True)


@pytest.fixture
async def original(postgres: SessionPostgres) -> AsyncIterator[OriginalDatabase]:
    url = await postgres.create_database("ilps_original")
    user_id, other_user_id = uuid.uuid4(), uuid.uuid4()
    tasks = legacy_tasks(user_id, other_user_id)
    await build_original(url, tasks)
    yield OriginalDatabase(url, user_id, other_user_id, tasks)
    await postgres.drop_database(url)


def expected_status(task: LegacyTask) -> str:
    return task.status.lower() if task.finished else "failed"


def expected_comment(task: LegacyTask) -> str | None:
    if task.finished:
        return task.comment
    return UPGRADE_NOTE + (f" Earlier note: {task.comment}" if task.comment else "")


async def rows_by_id(url: URL, query: str) -> dict[uuid.UUID, dict[str, Any]]:
    return {row["id"]: row for row in await fetch(url, query)}


async def test_every_task_is_kept_and_unfinished_ones_fail_with_a_note(
    original: OriginalDatabase,
) -> None:
    before = await fetch(original.url, "SELECT now() AS now")
    await upgrade_to_head(original.url)

    rows = await rows_by_id(
        original.url, "SELECT *, accuracy::text AS accuracy_text FROM tasks ORDER BY id"
    )
    assert set(rows) == {task.id for task in original.tasks}
    for task in original.tasks:
        row = rows[task.id]
        assert row["user_id"] == task.user_id
        assert row["text_id"] == task.text_id
        assert row["title"] == (task.title or "Упражнение")
        assert row["status"] == expected_status(task), task.status
        assert row["result"] == task.result
        assert row["comment"] == expected_comment(task)
        assert row["created_at"] == task.created_at
        # 57.1 stored as `real` stays 57.1, not 57.099998474121094.
        assert row["accuracy"] == task.accuracy
        expected_mistakes = None if task.mistakes is None else json.loads(task.mistakes)
        assert (None if row["mistakes"] is None else json.loads(row["mistakes"])) == (
            expected_mistakes
        )
        if task.finished:
            assert row["completed_at"] == task.completed_at
        else:
            assert row["completed_at"] >= before[0]["now"]
        assert row["lease_owner"] is None
        assert row["last_event_seq"] == 2

    events = await fetch(original.url, "SELECT * FROM task_events ORDER BY task_id, seq")
    by_task: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for event in events:
        by_task.setdefault(event["task_id"], []).append(event)
    for task in original.tasks:
        created, ended = by_task[task.id]
        assert (created["seq"], created["kind"], created["status"]) == (1, "status", "created")
        assert created["created_at"] == task.created_at
        assert (ended["seq"], ended["kind"], ended["status"]) == (
            2,
            "status",
            expected_status(task),
        )
        assert ended["created_at"] == rows[task.id]["completed_at"] or task.completed_at is None
        assert ended["created_at"] >= created["created_at"]
        assert ended["detail"] == (
            rows[task.id]["comment"] if ended["status"] == "failed" else None
        )

    assert await alembic_revisions(original.url) == [head_revision()]
    assert await fetch(original.url, "SELECT 1 FROM pg_type WHERE typname = 'status'") == []


async def test_migrated_tasks_answer_on_the_legacy_and_resource_routes(
    original: OriginalDatabase,
) -> None:
    await upgrade_to_head(original.url)
    mine = original.of(original.user_id)

    async with serve(create_app(make_settings(), database_url=original.url)) as client:
        assert (await client.get("/health/ready")).status_code == 200  # schema at the head
        listed = (await client.post("/", json=user_body(original.user_id))).json()
        assert listed == [
            {
                "id": str(task.id),
                "status": expected_status(task),
                "title": task.title,
                "accuracy": task.accuracy,
                "created_at": listed[index]["created_at"],
            }
            for index, task in enumerate(mine)
        ]
        assert [datetime.fromisoformat(item["created_at"]) for item in listed] == [
            task.created_at for task in mine
        ]

        for task in original.tasks:
            detail = await client.post(f"/{task.id}", json=user_body(task.user_id))
            assert detail.status_code == 200
            assert detail.json() == {
                "id": str(task.id),
                "title": task.title or "Упражнение",
                "text_id": str(task.text_id),
                "status": expected_status(task),
                "result": task.result,
                "accuracy": task.accuracy,
                "mistakes": None if task.mistakes is None else json.loads(task.mistakes),
                "comment": expected_comment(task),
            }
        someone_elses = original.of(original.other_user_id)[0]
        refused = await client.post(f"/{someone_elses.id}", json=user_body(original.user_id))
        assert (refused.status_code, refused.json()) == (404, {"detail": "Task not found."})

        headers = {"X-User-Id": str(original.user_id)}
        page = (await client.get("/tasks", headers=headers)).json()
        assert [item["id"] for item in page["items"]] == [str(task.id) for task in mine]
        failed = (await client.get("/tasks?status=failed", headers=headers)).json()
        assert len(failed["items"]) == sum(expected_status(task) == "failed" for task in mine)

        for task in mine:
            resource = (await client.get(f"/tasks/{task.id}", headers=headers)).json()
            assert resource["status"] == expected_status(task)
            assert resource["comment"] == expected_comment(task)
            assert resource["stages"] == []  # the original kept no stage times


async def test_migrated_tasks_stream_their_history(original: OriginalDatabase) -> None:
    await upgrade_to_head(original.url)
    completed = next(task for task in original.of(original.user_id) if task.status == "COMPLETED")
    unfinished = next(task for task in original.of(original.user_id) if task.status == "STARTED")
    app = create_app(make_settings(), database_url=original.url)

    with live_server(app) as base_url:
        for task in (completed, unfinished):
            async with sse_events(
                base_url, "POST", f"/{task.id}/stream", json_body=user_body(task.user_id)
            ) as (response, events):
                assert response.status_code == 200
                received = [json.loads(event.data) for event in await collect(events)]
            assert received == [
                {
                    "event": "status_updated",
                    "task_id": str(task.id),
                    "status": expected_status(task),
                    "retry": 15000,
                }
            ]

        query = {"user_id": str(original.user_id)}
        async with sse_events(base_url, "GET", f"/tasks/{unfinished.id}/events", params=query) as (
            response,
            events,
        ):
            assert response.status_code == 200
            current = await collect(events)
        assert [(event.event, event.id) for event in current] == [("failed", "2")]
        assert json.loads(current[0].data)["comment"] == UPGRADE_NOTE

        replay = {**query, "last_event_id": "0"}
        async with sse_events(base_url, "GET", f"/tasks/{completed.id}/events", params=replay) as (
            _,
            events,
        ):
            history = await collect(events)
        assert [(event.event, event.id) for event in history] == [
            ("created", "1"),
            ("completed", "2"),
        ]
        assert json.loads(history[1].data)["accuracy"] == completed.accuracy


async def test_a_user_with_migrated_tasks_gets_new_work_done(
    original: OriginalDatabase, fakes: FakeServices
) -> None:
    await upgrade_to_head(original.url)
    app = create_app(pipeline_settings(fakes), database_url=original.url)

    async with serve(app) as client:
        marker = new_marker()
        created = await legacy_upload(client, original.user_id, audio=audio_for(marker))
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]

        async def finished() -> dict[str, Any] | None:
            detail = (await client.post(f"/{task_id}", json=user_body(original.user_id))).json()
            return detail if detail["status"] in ("completed", "failed") else None

        detail = await eventually(finished, within=30, message="the new task to finish")
        assert detail["status"] == "completed", detail["comment"]
        assert detail["accuracy"] == FEEDBACK_ACCURACY
        assert detail["mistakes"] == FEEDBACK_MISTAKES

        listed = (await client.post("/", json=user_body(original.user_id))).json()
        assert [item["id"] for item in listed] == [task_id] + [
            str(task.id) for task in original.of(original.user_id)
        ]
        resource = (
            await client.get(f"/tasks/{task_id}", headers={"X-User-Id": str(original.user_id)})
        ).json()
        assert [stage["stage"] for stage in resource["stages"]] == [
            "preprocessing",
            "transcribing",
            "feedback",
        ]
    # Nothing of the migrated tasks was picked up again by the workers.
    for stage in fakes.all():
        assert stage.count() == 1, stage.name


async def test_the_downgrade_hands_every_task_back_in_the_originals_exact_schema(
    original: OriginalDatabase, fakes: FakeServices, postgres: SessionPostgres
) -> None:
    await upgrade_to_head(original.url)
    async with serve(create_app(pipeline_settings(fakes), database_url=original.url)) as client:
        done = await legacy_upload(client, original.user_id, audio=audio_for(new_marker()))
        done_id = uuid.UUID(done.json()["id"])

        async def completed() -> bool:
            detail = (await client.post(f"/{done_id}", json=user_body(original.user_id))).json()
            return bool(detail["status"] == "completed")

        await eventually(completed, within=30, message="the new task to complete")
    async with serve(create_app(make_settings(), database_url=original.url)) as client:
        # No workers: this one is still waiting for its first stage at the downgrade.
        waiting = await legacy_upload(client, original.user_id, title="Comma Gets a Cure")
        waiting_id = uuid.UUID(waiting.json()["id"])

    await downgrade_to(original.url, ORIGINAL_REVISION)

    reference = await postgres.create_database("ilps_reference")
    try:
        await execute_sql(reference, ORIGINAL_SCHEMA_SQL)
        assert await catalog_facts(original.url) == await catalog_facts(reference)
    finally:
        await postgres.drop_database(reference)
    assert await alembic_revisions(original.url) == [ORIGINAL_REVISION]

    rows = await rows_by_id(
        original.url,
        "SELECT *, status::text AS status_name, accuracy::text AS accuracy_text FROM tasks",
    )
    assert set(rows) == {task.id for task in original.tasks} | {done_id, waiting_id}
    for task in original.tasks:
        row = rows[task.id]
        assert row["status_name"] == expected_status(task).upper()
        assert (row["user_id"], row["text_id"], row["result"]) == (
            task.user_id,
            task.text_id,
            task.result,
        )
        assert row["title"] == (task.title or "Упражнение")
        assert row["comment"] == expected_comment(task)
        assert row["created_at"] == task.created_at
        # Back in `real`, with the same text as the original showed.
        assert row["accuracy_text"] == (None if task.accuracy is None else f"{task.accuracy:g}")
        if task.mistakes is not None:
            assert json.loads(row["mistakes"]) == json.loads(task.mistakes)
    assert rows[done_id]["status_name"] == "COMPLETED"
    assert rows[done_id]["accuracy_text"] == f"{FEEDBACK_ACCURACY:g}"
    assert json.loads(rows[done_id]["mistakes"]) == FEEDBACK_MISTAKES
    assert rows[waiting_id]["status_name"] == "FAILED"
    assert rows[waiting_id]["title"] == "Comma Gets a Cure"
    assert rows[waiting_id]["comment"].startswith(DOWNGRADE_NOTE_START)
    assert rows[waiting_id]["completed_at"] is not None

    # And up again: what the original did meanwhile is taken over the same way.
    await upgrade_to_head(original.url)
    again = await rows_by_id(original.url, "SELECT id, status FROM tasks")
    assert again[waiting_id]["status"] == "failed"
    assert again[done_id]["status"] == "completed"


def _alembic_cli(
    postgres: SessionPostgres, url: URL, *args: str
) -> subprocess.CompletedProcess[str]:
    """The real `alembic` command, configured as operators do: MANAGER_DB_POSTGRES_*."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MANAGER_")
    }
    environment.update(postgres.environment(url))
    environment["MANAGER_DEBUG_MODE"] = "False"
    for stage in ("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"):
        environment[f"MANAGER_SERVICE_{stage}_HOST"] = "127.0.0.1"
        environment[f"MANAGER_SERVICE_{stage}_PORT"] = "9"
    return subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "alembic"), *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


OLDER_ORIGINAL_REVISIONS = (
    "defd820781f5",
    "d6a08a1eb0c1",
    "638b5cfed907",
    "5960e8216d49",
    "7c8979e05723",
)


async def _database_at(postgres: SessionPostgres, revision: str) -> URL:
    url = await postgres.create_database("ilps_older")
    await execute_sql(
        url,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
        f"INSERT INTO alembic_version VALUES ('{revision}');",
    )
    return url


async def test_an_older_original_revision_is_refused_in_one_line(
    postgres: SessionPostgres,
) -> None:
    url = await _database_at(postgres, "7c8979e05723")
    try:
        run = _alembic_cli(postgres, url, "upgrade", "head")

        assert run.returncode != 0
        assert printed_lines(run) == REFUSAL_AT_7C8979E05723
        assert await alembic_revisions(url) == ["7c8979e05723"]
    finally:
        await postgres.drop_database(url)


@pytest.mark.parametrize("revision", OLDER_ORIGINAL_REVISIONS)
async def test_every_older_original_revision_is_refused(
    postgres: SessionPostgres, revision: str
) -> None:
    url = await _database_at(postgres, revision)
    try:
        with pytest.raises(CommandError, match=f"at revision {revision} of the original"):
            await upgrade_to_head(url)
        assert await alembic_revisions(url) == [revision]
    finally:
        await postgres.drop_database(url)


async def test_the_command_line_upgrade_reports_what_it_did(
    original: OriginalDatabase, postgres: SessionPostgres
) -> None:
    run = _alembic_cli(postgres, original.url, "upgrade", "head")

    assert run.returncode == 0, run.stderr
    unfinished = sum(not task.finished for task in original.tasks)
    assert (
        f"Took over the original task manager's tasks: {len(original.tasks)} kept, "
        f"{unfinished} unfinished failed"
    ) in run.stderr

    run = _alembic_cli(postgres, original.url, "downgrade", ORIGINAL_REVISION)
    assert run.returncode == 0, run.stderr
    assert f"{len(original.tasks)} kept, 0 unfinished failed" in run.stderr


async def test_a_failing_upgrade_changes_nothing(original: OriginalDatabase) -> None:
    """One transaction: a row jsonb cannot hold stops the upgrade, and the original is intact."""
    await execute_sql(
        original.url,
        'UPDATE tasks SET mistakes = \'[{"value": "\\u0000"}]\' '
        f"WHERE id = '{original.tasks[0].id}'",
    )
    before = await catalog_facts(original.url)

    with pytest.raises(Exception, match="Unicode escape"):
        await upgrade_to_head(original.url)

    assert await catalog_facts(original.url) == before
    assert len(await fetch(original.url, "SELECT * FROM tasks")) == len(original.tasks)
    assert await alembic_revisions(original.url) == [ORIGINAL_REVISION]
