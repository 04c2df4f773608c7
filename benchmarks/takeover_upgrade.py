"""Taking over the original task manager's database: `alembic upgrade head` and the rollback.

    .venv/bin/python -m benchmarks.takeover_upgrade [--tasks 100000] [--runs 3]

Builds one database in the original's schema at its head revision (c7e1b585e358) holding
`--tasks` tasks — mixed statuses as a live deployment has them (mostly completed, some
failed, a few unfinished), a few thousand users, and mistakes lists of the feedback
service's shape — and uses it as a template. Each run copies it (CREATE DATABASE …
TEMPLATE), times `alembic upgrade head` on the copy (the same command the image runs),
checks what it produced, times `alembic downgrade c7e1b585e358` on it, and drops it.
Reports the median, min and max of the runs. The commands run in this process, after one
warm-up on an empty database, so the figures leave out Python's start-up and imports
(about a second for the `alembic` command line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import URL

from app.db.migrations import ORIGINAL_REVISION, downgrade_to, upgrade_to_head
from app.db.url import asyncpg_dsn
from benchmarks.cli import add_quiet_wait_argument, benchmark_parser
from benchmarks.database import BenchDatabase, add_database_arguments, postgres_server
from benchmarks.proc import wait_for_quiet_machine
from benchmarks.report import Report, machine_info, print_machine
from tests.migrations.original import ORIGINAL_SCHEMA_SQL, ORIGINAL_STATUSES
from tests.postgres import SessionPostgres

# Shares of a live database: nearly everything finished; unfinished tasks are the few in
# flight when the original stopped.
STATUS_WEIGHTS = {
    "COMPLETED": 0.86,
    "FAILED": 0.10,
    "CREATED": 0.01,
    "STARTED": 0.005,
    "PREPROCESSING": 0.005,
    "TRANSCRIBING": 0.01,
    "EVALUATING": 0.01,
}
# English phonemes in IPA, as the transcriber writes them.
PHONEMES = (
    "p", "b", "t", "d", "k", "g", "f", "v", "θ", "ð", "s", "z", "ʃ", "ʒ", "h", "m", "n", "ŋ",
    "l", "r", "w", "j", "i", "ɪ", "e", "ɛ", "æ", "ʌ", "ə", "ɑ", "ɔ", "ʊ", "u", "aɪ", "aʊ",
)  # fmt: skip
MISTAKE_TYPES = ("Replacement", "Insertion", "Deletion")


def _mistakes(rng: random.Random) -> list[dict[str, Any]]:
    """A feedback answer's list: 0–25 mistakes, each with its positions and phonemes."""
    mistakes: list[dict[str, Any]] = []
    for position in sorted(rng.sample(range(120), rng.randint(0, 25))):
        kind = rng.choice(MISTAKE_TYPES)
        reference = {"position": position, "value": rng.choice(PHONEMES)}
        actual = {"position": position, "value": rng.choice(PHONEMES)}
        mistakes.append(
            {
                "reference": None if kind == "Insertion" else reference,
                "actual": None if kind == "Deletion" else actual,
                "type": kind,
            }
        )
    return mistakes


def original_rows(count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    users = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(max(1, count // 20))]
    texts = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(50)]
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for number in range(count):
        status = rng.choices(statuses, weights)[0]
        created_at = start + timedelta(seconds=number * 250 + rng.randint(0, 200))
        finished = status in ("COMPLETED", "FAILED")
        completed = status == "COMPLETED"
        yield (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            status,
            rng.choice(users),
            rng.choice(texts),
            " ".join(rng.choices(PHONEMES, k=60)) if completed else None,
            created_at,
            created_at + timedelta(seconds=rng.uniform(2, 40)) if finished else None,
            "feedback failed: Text not found." if status == "FAILED" else None,
            f"Exercise {number % 300}",
            round(rng.uniform(0, 100), 1) if completed else None,
            json.dumps(_mistakes(rng), ensure_ascii=False) if completed else None,
        )


async def build_template(url: URL, tasks: int) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(ORIGINAL_SCHEMA_SQL)
        await connection.copy_records_to_table(
            "tasks",
            records=original_rows(tasks),
            columns=[
                "id",
                "status",
                "user_id",
                "text_id",
                "result",
                "created_at",
                "completed_at",
                "comment",
                "title",
                "accuracy",
                "mistakes",
            ],
        )
        await connection.execute("ANALYZE tasks")
    finally:
        await connection.close()


async def _admin(postgres: SessionPostgres, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(postgres.admin_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _scalar(url: URL, query: str) -> Any:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def warm_up(postgres: SessionPostgres) -> None:
    """Migrate an empty database once, so no run pays for importing Alembic and the app."""
    url = await postgres.create_database("ilps_bench_takeover_warm_up")
    try:
        await upgrade_to_head(url)
        await downgrade_to(url, ORIGINAL_REVISION)
    finally:
        await postgres.drop_database(url)


async def one_run(postgres: SessionPostgres, template: URL, tasks: int) -> dict[str, float]:
    name = f"ilps_bench_takeover_{uuid.uuid4().hex[:10]}"
    await _admin(postgres, f'CREATE DATABASE "{name}" TEMPLATE "{template.database}"')
    url = postgres.database_url(name)
    try:
        started = time.perf_counter()
        await upgrade_to_head(url)
        upgrade = time.perf_counter() - started
        kept = await _scalar(url, "SELECT count(*) FROM tasks")
        events = await _scalar(url, "SELECT count(*) FROM task_events")
        if (kept, events) != (tasks, 2 * tasks):
            raise AssertionError(f"upgrade kept {kept} tasks and wrote {events} events")

        started = time.perf_counter()
        await downgrade_to(url, ORIGINAL_REVISION)
        downgrade = time.perf_counter() - started
        back = await _scalar(url, "SELECT count(*) FROM tasks")
        if back != tasks:
            raise AssertionError(f"downgrade handed back {back} of {tasks} tasks")
    finally:
        await postgres.drop_database(url)
    return {"upgrade": upgrade, "downgrade": downgrade}


async def run(args: argparse.Namespace) -> None:
    report = Report("takeover_upgrade")
    with postgres_server(embedded=args.embedded, database_url=args.database_url) as postgres:
        template = await postgres.create_database("ilps_bench_takeover_template")
        try:
            started = time.perf_counter()
            await build_template(template, args.tasks)
            build_seconds = time.perf_counter() - started
            database = BenchDatabase(server=postgres, url=template)
            machine = await machine_info(database)
            size = await _scalar(
                template, "SELECT pg_size_pretty(pg_database_size(current_database()))"
            )
            unfinished = await _scalar(
                template, "SELECT count(*) FROM tasks WHERE status NOT IN ('COMPLETED', 'FAILED')"
            )
            await warm_up(postgres)
            machine["busy_before_start"] = wait_for_quiet_machine(args.quiet_wait)
            runs = [await one_run(postgres, template, args.tasks) for _ in range(args.runs)]
        finally:
            await postgres.drop_database(template)

    upgrades = [item["upgrade"] for item in runs]
    downgrades = [item["downgrade"] for item in runs]
    report.figures = {
        "tasks": args.tasks,
        "unfinished_tasks": unfinished,
        "statuses": list(ORIGINAL_STATUSES),
        "database_size": size,
        "runs": args.runs,
        "upgrade_seconds_median": statistics.median(upgrades),
        "upgrade_seconds": upgrades,
        "downgrade_seconds_median": statistics.median(downgrades),
        "downgrade_seconds": downgrades,
        "template_build_seconds": build_seconds,
        "machine": machine,
    }
    print_machine(report, machine)
    report.table(
        f"Original database: {args.tasks:,} tasks ({unfinished:,} unfinished), {size}",
        ["step", "median s", "min s", "max s", "tasks/s (median)"],
        [
            [
                name,
                statistics.median(values),
                min(values),
                max(values),
                args.tasks / statistics.median(values),
            ]
            for name, values in (
                ("alembic upgrade head", upgrades),
                (f"alembic downgrade {ORIGINAL_REVISION}", downgrades),
            )
        ],
    )
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    add_quiet_wait_argument(parser)
    # Its databases are the template's copies, each dropped once measured: none to keep.
    add_database_arguments(parser, keep=False)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
