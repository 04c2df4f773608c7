"""How long one claim takes, by the size and the shape of the waiting backlog.

Each scenario fills a fresh `tasks` table with SQL, then times claims from the client's
side: BEGIN (REPEATABLE READ), the claim statement, ROLLBACK. The rollback leaves the queue
as it was, so every claim of a scenario faces the same backlog. "before" is the claim
statement this project used until migration 0002 (it walked the queue head task by task,
counting each task's user's leases, and returned the audio in the same statement);
"after" is `app.pipeline.queue`'s. Both run against the same database and rows.

Run: `.venv/bin/python -m benchmarks.claim_latency` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from app.config import Settings
from app.db.queries import queries
from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, bench_database
from benchmarks.load import latency_summary
from benchmarks.proc import wait_for_quiet_machine
from benchmarks.report import Report, machine_info, print_machine

OWNER = "benchmark-claimer"
BUSY_OWNER = "benchmark-busy-owner"
PER_USER = 2
LEASE_SECONDS = 30

# The claim statement before migration 0002, kept here to measure against.
BEFORE_CLAIM = """
    WITH candidate AS (
        SELECT t.id FROM tasks t
        WHERE t.status NOT IN ('completed', 'failed')
          AND t.run_after <= now()
          AND (t.lease_expires_at IS NULL OR t.lease_expires_at < now())
          AND (
              SELECT count(*) FROM tasks busy
              WHERE busy.user_id = t.user_id
                AND busy.lease_owner IS NOT NULL
                AND busy.lease_expires_at >= now()
          ) < $3
        ORDER BY t.created_at, t.id
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED
    ), claimed AS (
        UPDATE tasks SET
            lease_owner = $1,
            lease_expires_at = now() + make_interval(secs => $2),
            claim_count = claim_count + 1
        FROM candidate WHERE tasks.id = candidate.id
        RETURNING tasks.id, tasks.user_id, tasks.text_id, tasks.status, tasks.stage_attempts,
                  tasks.claim_count, tasks.result, tasks.created_at
    )
    SELECT claimed.*, wav.content IS NOT NULL AS has_preprocessed_audio,
           CASE WHEN wav.content IS NULL THEN upload.content
                WHEN claimed.result IS NULL THEN wav.content END AS audio
    FROM claimed
    LEFT JOIN task_audio wav ON wav.task_id = claimed.id AND wav.kind = 'preprocessed'
    LEFT JOIN task_audio upload ON upload.task_id = claimed.id AND upload.kind = 'upload'
"""


def after_claim() -> str:
    """The claim (`claim_next_task` in app/db/sql/queue.sql) with these numbered parameters."""
    sql = queries("queue").claim_next_task.sql
    for name, number in (("owner", 1), ("lease", 2), ("per_user", 3)):
        sql = sql.replace(f":{name}", f"${number}")
    # The claim also enters the first stage unless the task was interrupted this often;
    # the service's default, written in, keeps the parameters the old claim's.
    default = Settings.model_fields["pipeline_max_claims"].default
    return sql.replace(":max_claims", str(int(default)))


AFTER_AUDIO = "SELECT content FROM task_audio WHERE task_id = $1 AND kind = 'upload'"


class Scenario:
    def __init__(
        self,
        name: str,
        *,
        waiting: int,
        per_user_tasks: int,
        heavy_backlog: int = 0,
        audio_bytes: int = 256,
    ) -> None:
        self.name = name
        self.waiting = waiting
        self.per_user_tasks = per_user_tasks
        self.heavy_backlog = heavy_backlog
        self.audio_bytes = audio_bytes

    async def fill(self, connection: Any) -> None:
        await connection.execute("TRUNCATE tasks CASCADE")
        if self.heavy_backlog:
            # One user with a long backlog, the oldest of all, already at the cap.
            await connection.execute(
                """
                INSERT INTO tasks (user_id, text_id, created_at)
                SELECT '00000000-0000-0000-0000-0000000000aa', gen_random_uuid(),
                       now() - interval '2 days' + g * interval '1 millisecond'
                FROM generate_series(1, $1) g
                """,
                self.heavy_backlog,
            )
            await connection.execute(
                """
                UPDATE tasks SET lease_owner = $1, status = 'preprocessing', leased_at = now(),
                    leased_on = server_identity(),
                    lease_expires_at = now() + interval '1 hour'
                WHERE id IN (SELECT id FROM tasks ORDER BY created_at LIMIT $2)
                """,
                BUSY_OWNER,
                PER_USER,
            )
        users = max(1, self.waiting // self.per_user_tasks)
        await connection.execute(
            """
            INSERT INTO tasks (user_id, text_id, created_at)
            SELECT md5('user' || (g % $2))::uuid, gen_random_uuid(),
                   now() - interval '1 day' + g * interval '1 millisecond'
            FROM generate_series(1, $1) g
            """,
            self.waiting,
            users,
        )
        await connection.execute(
            """
            INSERT INTO task_audio (task_id, kind, content, size)
            SELECT id, 'upload', decode(repeat('00', $1), 'hex'), $1 FROM tasks
            """,
            self.audio_bytes,
        )
        await connection.execute("VACUUM ANALYZE tasks")
        await connection.execute("VACUUM ANALYZE task_audio")
        await connection.execute("VACUUM ANALYZE queue_users")

    @property
    def description(self) -> str:
        heavy = f", +1 user with {self.heavy_backlog:,} at the cap" if self.heavy_backlog else ""
        return (
            f"{self.waiting:,} waiting ({self.per_user_tasks} per user){heavy}, "
            f"{self.audio_bytes:,} B uploads"
        )


SCENARIOS: Sequence[Scenario] = (
    Scenario("waiting_100", waiting=100, per_user_tasks=10),
    Scenario("waiting_10000", waiting=10_000, per_user_tasks=10),
    Scenario("waiting_100000", waiting=100_000, per_user_tasks=10),
    Scenario("one_user_50000_at_cap", waiting=100, per_user_tasks=1, heavy_backlog=50_000),
    Scenario("uploads_3_5MB", waiting=100, per_user_tasks=10, audio_bytes=3_528_000),
)


async def time_claims(
    connection: Any, statement: str, *, count: int, budget: float, with_audio: bool
) -> tuple[list[float], list[float]]:
    """Claim (and roll back) up to `count` times within `budget` seconds.

    Returns the claim transactions' durations, and (after only) those of the audio read
    that follows a claim outside the lock.
    """
    claims: list[float] = []
    reads: list[float] = []
    deadline = time.monotonic() + budget
    prepared = await connection.prepare(statement)
    # The prepare leaves the server inside an implicit transaction (asyncpg ends it with no
    # Sync), where BEGIN ISOLATION LEVEL fails: a simple query closes it.
    await connection.execute("SELECT 1")
    while len(claims) < count and time.monotonic() < deadline:
        started = time.perf_counter()
        # As `queue.claim_next_task` runs it: REPEATABLE READ, no lock shared by all claims.
        await queries("queue").begin_claim.execute(connection)
        row = await prepared.fetchrow(OWNER, LEASE_SECONDS, PER_USER)
        await connection.execute("ROLLBACK")
        claims.append(time.perf_counter() - started)
        if row is None:
            raise RuntimeError("the claim found nothing to claim")
        if with_audio:
            started = time.perf_counter()
            await connection.fetchval(AFTER_AUDIO, row["id"])
            reads.append(time.perf_counter() - started)
    return claims, reads


async def plan_buffers(connection: Any, statement: str) -> int:
    """Shared buffers one claim touches (EXPLAIN ANALYZE, BUFFERS; rolled back): the
    claim's work, unaffected by how busy the machine is."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        plan = await connection.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", OWNER, LEASE_SECONDS, PER_USER
        )
    finally:
        await transaction.rollback()
    top = json.loads(plan)[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


async def run(args: argparse.Namespace) -> None:
    report = Report("claim_latency")
    busy_before = wait_for_quiet_machine(args.quiet_wait)
    async with bench_database(args, "ilps_bench_claims") as database:
        machine = await machine_info(database)
        machine["busy_before_start"] = busy_before
        figures: dict[str, Any] = {}
        rows: list[list[Any]] = []
        await measure(database, args, figures, rows)
    report.figures = {"machine": machine, "scenarios": figures}
    print_machine(report, machine)
    report.table(
        "Claim latency (BEGIN, claim, ROLLBACK; ms, from the client)",
        [
            "scenario",
            "before p50",
            "before p99",
            "after p50",
            "after p99",
            "p99 ratio",
            "before pages",
            "after pages",
            "after: audio read p50",
        ],
        rows,
    )
    report.emit()


async def measure(
    database: BenchDatabase, args: argparse.Namespace, figures: dict[str, Any], rows: list[Any]
) -> None:
    connection = await database.connect()
    owner_lock = await database.connect()
    busy_lock = await database.connect()
    try:
        # The claimer's and the busy owner's liveness locks, as their processes hold them.
        await owner_lock.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", OWNER)
        await busy_lock.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", BUSY_OWNER)
        for scenario in SCENARIOS:
            if args.only and scenario.name not in args.only:
                continue
            print(f"{scenario.name}: {scenario.description}", flush=True)
            await scenario.fill(connection)
            before, _ = await time_claims(
                connection, BEFORE_CLAIM, count=args.claims, budget=args.budget, with_audio=False
            )
            after, reads = await time_claims(
                connection, after_claim(), count=args.claims, budget=args.budget, with_audio=True
            )
            summary: dict[str, Any] = {
                "description": scenario.description,
                "before_buffers": await plan_buffers(connection, BEFORE_CLAIM),
                "after_buffers": await plan_buffers(connection, after_claim()),
                "before": latency_summary(before),
                "after": latency_summary(after),
                "after_audio_read": latency_summary(reads),
            }
            figures[scenario.name] = summary
            ratio = summary["before"]["p99_ms"] / summary["after"]["p99_ms"]
            rows.append(
                [
                    scenario.name,
                    summary["before"]["p50_ms"],
                    summary["before"]["p99_ms"],
                    summary["after"]["p50_ms"],
                    summary["after"]["p99_ms"],
                    f"{ratio:.1f}x",
                    summary["before_buffers"],
                    summary["after_buffers"],
                    summary["after_audio_read"]["p50_ms"],
                ]
            )
            await connection.execute("TRUNCATE tasks CASCADE")
    finally:
        for held in (connection, owner_lock, busy_lock):
            await held.close()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--claims", type=int, default=300, help="claims per scenario and side")
    parser.add_argument(
        "--budget", type=float, default=30.0, help="seconds at most per scenario and side"
    )
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
