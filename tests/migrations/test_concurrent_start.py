"""Replicas that start together migrate once: the migration lock makes them take turns,
and the ones that waited find the schema at head."""

from __future__ import annotations

import asyncio
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
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                PROBE,
                cwd=PROJECT_ROOT,
                env=environment,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(REPLICAS)
        ]
        async with asyncio.timeout(180):
            outputs = await asyncio.gather(*(replica.communicate() for replica in replicas))
        outcomes = [(out.decode(), err.decode()) for out, err in outputs]

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
