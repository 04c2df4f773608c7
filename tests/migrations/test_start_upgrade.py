"""`python start.py` migrates as `alembic upgrade head` did in front of it: Alembic's own
run (its log lines, the takeover, the refusal of the original's older revisions) unless
the database already records the head, which costs one query and never loads Alembic."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import URL

from app.db.migrations import ORIGINAL_REVISION, PROJECT_ROOT, head_revision, upgrade_to_head
from tests.migrations.original import (
    REFUSAL_AT_7C8979E05723,
    alembic_revisions,
    build_original,
    execute_sql,
    fetch,
    legacy_tasks,
    printed_lines,
)
from tests.postgres import SessionPostgres
from tests.process import ServiceProcess

# What start.py does before serving, then whether Alembic was loaded.
PROBE = """
import sys
from app.config import load_settings
from app.db.migrations import upgrade_at_start
from app.db.url import configured_database_url
head = upgrade_at_start(configured_database_url(load_settings()))
print("head", head, "alembic", "alembic" in sys.modules)
"""


def _environment(postgres: SessionPostgres, url: URL) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANAGER_")}
    environment.update(postgres.environment(url))
    environment["MANAGER_DEBUG_MODE"] = "False"
    environment["MANAGER_WORKER_CONCURRENCY"] = "0"
    for stage in ("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"):
        environment[f"MANAGER_SERVICE_{stage}_HOST"] = "127.0.0.1"
        environment[f"MANAGER_SERVICE_{stage}_PORT"] = "9"
    return environment


def _run(postgres: SessionPostgres, url: URL, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT_ROOT,
        env=_environment(postgres, url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_database_at_head_is_not_migrated_and_alembic_not_loaded(
    postgres: SessionPostgres,
) -> None:
    url = await postgres.create_database("ilps_start_head")
    try:
        await upgrade_to_head(url)

        run = _run(postgres, url, "-c", PROBE)

        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["head", str(head_revision()), "alembic", "False"]
        assert run.stderr == ""
        assert await alembic_revisions(url) == [head_revision()]
    finally:
        await postgres.drop_database(url)


async def test_an_empty_database_is_migrated_by_alembic(postgres: SessionPostgres) -> None:
    url = await postgres.create_database("ilps_start_empty")
    try:
        run = _run(postgres, url, "-c", PROBE)

        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["head", "None", "alembic", "True"]
        assert f"[alembic.runtime.migration] Running upgrade  -> {ORIGINAL_REVISION}" in run.stderr
        assert await alembic_revisions(url) == [head_revision()]
    finally:
        await postgres.drop_database(url)


async def test_an_older_original_revision_is_refused_in_one_line(
    postgres: SessionPostgres,
) -> None:
    url = await postgres.create_database("ilps_start_older")
    try:
        await execute_sql(
            url,
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
            "INSERT INTO alembic_version VALUES ('7c8979e05723');",
        )

        run = _run(postgres, url, "start.py")

        assert run.returncode == 255  # as `alembic upgrade head` exits, so the shell did
        assert printed_lines(run) == REFUSAL_AT_7C8979E05723
        assert await alembic_revisions(url) == ["7c8979e05723"]
    finally:
        await postgres.drop_database(url)


async def test_start_py_takes_over_the_originals_database_then_serves(
    postgres: SessionPostgres, tmp_path: Path
) -> None:
    url = await postgres.create_database("ilps_start_original")
    tasks = legacy_tasks(uuid.uuid4(), uuid.uuid4())
    try:
        await build_original(url, tasks)
        log_path = tmp_path / "service.log"

        with ServiceProcess(_environment(postgres, url), log_path):
            pass  # /health answered

        log = log_path.read_text()
        unfinished = sum(not task.finished for task in tasks)
        assert f"Running upgrade {ORIGINAL_REVISION} -> 0001" in log
        assert (
            f"Took over the original task manager's tasks: {len(tasks)} kept, "
            f"{unfinished} unfinished failed"
        ) in log
        assert await alembic_revisions(url) == [head_revision()]
        assert len(await fetch(url, "SELECT id FROM tasks")) == len(tasks)
    finally:
        await postgres.drop_database(url)
