"""Replicas that start together migrate once: the migration lock makes them take turns,
and the ones that waited find the schema at head."""

from __future__ import annotations

import subprocess
import sys

from app.db.migrations import PROJECT_ROOT, head_revision
from tests.migrations.original import alembic_revisions
from tests.migrations.test_start_upgrade import PROBE, _environment
from tests.postgres import SessionPostgres

REPLICAS = 4


async def test_replicas_starting_together_upgrade_once(postgres: SessionPostgres) -> None:
    url = await postgres.create_database("ilps_start_together")
    try:
        environment = _environment(postgres, url)
        replicas = [
            subprocess.Popen(
                [sys.executable, "-c", PROBE],
                cwd=PROJECT_ROOT,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(REPLICAS)
        ]
        outcomes = [replica.communicate(timeout=180) for replica in replicas]

        for replica, (_, stderr) in zip(replicas, outcomes, strict=True):
            assert replica.returncode == 0, stderr
        heads = sorted(stdout.split()[1] for stdout, _ in outcomes)
        # One ran Alembic; the others waited on the lock, then found the head recorded.
        assert heads.count("None") == 1, outcomes
        assert heads.count(str(head_revision())) == REPLICAS - 1, outcomes
        assert sum("Running upgrade" in stderr for _, stderr in outcomes) == 1
        assert await alembic_revisions(url) == [head_revision()]
    finally:
        await postgres.drop_database(url)
