"""SSE fan-out: latency at 5 followers, frames per core and a 5 000/s load at 10 000.

    .venv/bin/python -m benchmarks.sse_fanout --compare DIR --quiet-wait 0

One service process per tree (production mode, no workers), driven by the raw SSE clients
of `benchmarks.followers`; with `--compare DIR` the other tree runs first, then this one
(`--source`), on the same database server, so the two columns are comparable. Three parts,
each with its own fresh tasks; the followers connect once per part and the part then runs
`--repetitions` measured windows one after the other (each waits for its events, bounded),
and reports the median window:

1. `latency`: 5 followers on 5 tasks, a transition committed every `--latency-interval-ms`
   (one task per transaction, with the app's `append_event`, as a worker would); commit →
   arrival p50/p99 at the followers.
2. `frames`: 10 000 followers on 100 tasks (100 per task), a transition every 20 ms, so
   5 000 frames/s offered (the `followers` benchmark's 10 000 phase): frames delivered ÷
   the service's CPU seconds (/proc, user + system, all threads) = frames per core-second,
   and commit → arrival p50/p99.
3. `load`: 10 000 followers on 10 000 tasks (one each), 5 000 transitions/s offered. One
   connection cannot commit 5 000 transactions a second here, so the transitions are
   batched: `--load-batch` (100) tasks move in one statement (the same UPDATE + history row +
   NOTIFY as the service's, `record_task_events`, for many tasks), one transaction every
   batch ÷ 5 000 s. What was actually offered (transitions ÷ the window's commit time) is
   reported. Commit → arrival p50/p99.

Streams end with a `completed` round after the windows (not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.history import EventRecord, append_event
from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase
from benchmarks.followers import (
    Follower,
    add_following_arguments,
    seed_followers,
    start_following,
    start_streaming_service,
    stop_following,
    writer_sessions,
)
from benchmarks.load import latency_summary
from benchmarks.polling import poll_until
from benchmarks.proc import CpuWatch, cpu_seconds
from benchmarks.report import Report, print_machine
from benchmarks.service import Service, raise_nofile_limit
from benchmarks.setting import bench_setting

SERVICE_NAME = "bench-sse-fanout"
GOAL_LATENCY_P99_MS = 20.0  # 5 followers
GOAL_FRAMES_PER_CORE_SECOND = 50_000.0  # 10 000 followers
GOAL_LOAD_P99_MS = 100.0  # 10 000 followers, 5 000 transitions/s
# Windows alternate between two non-terminal statuses; `completed` ends the streams.
WINDOW_STATUSES = ("preprocessing", "transcribing")

# A recorded move for many tasks at once: each task's row, and its numbered history row
# and NOTIFY '<task id>:<seq>' by the service's `record_task_events`, in one statement.
_MOVE_MANY = text(
    """
    WITH moved AS (
        UPDATE tasks SET status = :status, last_event_seq = last_event_seq + 1,
            updated_at = now(),
            accuracy = CASE WHEN :done THEN 90.0 END,
            completed_at = CASE WHEN :done THEN now() END
        WHERE id = ANY(:task_ids)
        RETURNING id, status, last_event_seq
    )
    SELECT id, last_event_seq,
           record_task_events(id, last_event_seq, ARRAY[status]::text[])
    FROM moved
    """
).bindparams(bindparam("task_ids", type_=ARRAY(UUID(as_uuid=True))))
_MOVE_ONE = text(
    "UPDATE tasks SET status = :status, accuracy = CASE WHEN :done THEN 90.0 END, "
    "completed_at = CASE WHEN :done THEN now() END WHERE id = :task_id"
)

Commits = dict[tuple[uuid.UUID, int], float]  # (task, seq) -> when its COMMIT returned


@dataclass(frozen=True)
class Part:
    name: str
    followers: int
    tasks: int
    transitions_per_window: int
    interval_s: float  # between two transactions
    batch: int  # tasks moved per transaction


async def commit_window(
    sessions: async_sessionmaker[AsyncSession],
    tasks: Sequence[uuid.UUID],
    status: str,
    *,
    batch: int,
    interval: float,
) -> tuple[Commits, float]:
    """Move `tasks` to `status`, `batch` per transaction every `interval` s (paced, bounded)."""
    commits: Commits = {}
    started = next_at = time.perf_counter()
    for first in range(0, len(tasks), batch):
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        next_at += interval
        group = list(tasks[first : first + batch])
        done = status == "completed"
        async with sessions() as session:
            if batch == 1:
                await session.execute(
                    _MOVE_ONE, {"status": status, "done": done, "task_id": group[0]}
                )
                seq = await append_event(session, group[0], EventRecord("status", status))
                moved = [(group[0], seq)]
            else:
                result = await session.execute(
                    _MOVE_MANY, {"status": status, "done": done, "task_ids": group}
                )
                moved = [(row[0], row[1]) for row in result]
            await session.commit()
            returned = time.perf_counter()
        for key in moved:
            commits[key] = returned
    return commits, time.perf_counter() - started


def arrivals(followers: Sequence[Follower], commits: Commits) -> list[float]:
    """Commit → arrival of every event in `commits`, at every follower that got it."""
    latencies = []
    for follower in followers:
        for seq, _event, arrived in follower.events:
            moment = commits.get((follower.task_id, seq))
            if moment is not None:
                latencies.append(arrived - moment)
    return latencies


async def wait_for(
    followers: Sequence[Follower], expected: int, commits: Commits, within: float
) -> int:
    """Wait (bounded) until `expected` events of `commits` arrived; returns how many did."""
    return await poll_until(
        lambda: len(arrivals(followers, commits)),
        lambda received: received >= expected,
        within=within,
        interval=0.1,
    )


async def run_part(
    args: argparse.Namespace,
    database: BenchDatabase,
    service: Service,
    sessions: async_sessionmaker[AsyncSession],
    part: Part,
) -> dict[str, Any]:
    tasks, followers = await seed_followers(database, part.tasks, part.followers)
    per_task = part.followers // part.tasks
    started = time.perf_counter()
    runners = start_following(followers, service.port, args.connect_concurrency)
    await poll_until(
        lambda: all(f.state != "new" for f in followers), within=args.connect_timeout, interval=0.1
    )
    connect_seconds = time.perf_counter() - started
    held = sum(1 for follower in followers if follower.state == "held")

    print(f"  {held} held after {connect_seconds:.1f} s; measuring", flush=True)
    gc.collect()
    gc.freeze()
    gc.disable()  # our collector must not pause the clocks
    windows: list[dict[str, Any]] = []
    try:
        for number in range(args.repetitions):
            status = WINDOW_STATUSES[number % len(WINDOW_STATUSES)]
            start = (number * part.transitions_per_window) % len(tasks)
            moving = [tasks[(start + i) % len(tasks)] for i in range(part.transitions_per_window)]
            watch = CpuWatch([service.pid])
            cpu_before = cpu_seconds(service.pid)
            commits, commit_seconds = await commit_window(
                sessions, moving, status, batch=part.batch, interval=part.interval_s
            )
            expected = len(commits) * per_task
            received = await wait_for(followers, expected, commits, args.drain_timeout)
            service_cpu = cpu_seconds(service.pid) - cpu_before
            machine = watch.finish()
            latency = latency_summary(arrivals(followers, commits))
            windows.append(
                {
                    "status": status,
                    "transitions": len(commits),
                    "offered_transitions_per_second": round(len(commits) / commit_seconds, 1),
                    "offered_frames_per_second": round(expected / commit_seconds, 1),
                    "frames_expected": expected,
                    "frames_received": received,
                    "service_cpu_s": round(service_cpu, 3),
                    "frames_per_core_second": round(received / max(service_cpu, 1e-9), 1),
                    "latency": latency,
                    "foreign_cpu_share": machine["foreign_cpu_share"],
                    "load_generator_cpu_s": machine["load_generator_cpu_s"],
                }
            )
        # End the streams: every task to `completed` (not measured).
        await commit_window(sessions, tasks, "completed", batch=max(part.batch, 50), interval=0.0)
        await poll_until(
            lambda: all(f.state != "held" for f in followers),
            within=args.drain_timeout,
            interval=0.1,
        )
    finally:
        gc.enable()
        gc.unfreeze()
        await stop_following(runners)

    def median(pick: Any) -> float:
        values = [pick(window) for window in windows]
        return round(statistics.median(values), 2) if values else float("nan")

    return {
        "part": part.name,
        "followers": part.followers,
        "tasks": part.tasks,
        "batch": part.batch,
        "held": held,
        "connect_seconds": round(connect_seconds, 2),
        "ended_after_completed": sum(
            1 for f in followers if f.events and f.events[-1][1] == "completed"
        ),
        "windows": windows,
        "missing": sum(w["frames_expected"] - w["frames_received"] for w in windows),
        "median_p50_ms": median(lambda w: w["latency"].get("p50_ms", float("inf"))),
        "median_p99_ms": median(lambda w: w["latency"].get("p99_ms", float("inf"))),
        "median_frames_per_core_second": median(lambda w: w["frames_per_core_second"]),
        "median_offered_transitions_per_second": median(
            lambda w: w["offered_transitions_per_second"]
        ),
        "median_offered_frames_per_second": median(lambda w: w["offered_frames_per_second"]),
        "median_foreign_cpu_share": median(lambda w: w["foreign_cpu_share"]),
    }


def parts(args: argparse.Namespace) -> list[Part]:
    load_interval = args.load_batch / args.load_rate
    return [
        Part("latency", 5, 5, args.latency_transitions, args.latency_interval_ms / 1000, 1),
        Part("frames", args.followers, 100, 100, 0.020, 1),
        Part(
            "load",
            args.followers,
            args.followers,
            min(args.followers, int(args.load_rate * args.load_seconds)),
            load_interval,
            args.load_batch,
        ),
    ]


async def run_tree(
    args: argparse.Namespace,
    database: BenchDatabase,
    sessions: async_sessionmaker[AsyncSession],
    source: Path,
    logs: Path,
) -> list[dict[str, Any]]:
    tree_args = argparse.Namespace(**{**vars(args), "source": source})
    cap = 4 * args.followers
    service = start_streaming_service(tree_args, database, logs, SERVICE_NAME, cap)
    results = []
    try:
        for part in parts(args):
            if args.parts and part.name not in args.parts.split(","):
                continue
            print(
                f"{source}: {part.name} ({part.followers} followers, service pid {service.pid})",
                flush=True,
            )
            results.append(await run_part(args, database, service, sessions, part))
    finally:
        service.stop()
    return results


def print_report(report: Report, runs: dict[str, list[dict[str, Any]]]) -> None:
    rows = []
    for tree, results in runs.items():
        for r in results:
            goal = {
                "latency": f"p99 <= {GOAL_LATENCY_P99_MS:g} ms: "
                + ("met" if r["median_p99_ms"] <= GOAL_LATENCY_P99_MS else "MISSED"),
                "frames": f">= {GOAL_FRAMES_PER_CORE_SECOND:,.0f}/core-s: "
                + (
                    "met"
                    if r["median_frames_per_core_second"] >= GOAL_FRAMES_PER_CORE_SECOND
                    else "MISSED"
                ),
                "load": f"p99 <= {GOAL_LOAD_P99_MS:g} ms: "
                + ("met" if r["median_p99_ms"] <= GOAL_LOAD_P99_MS else "MISSED"),
            }[r["part"]]
            rows.append(
                [tree, r["part"], r["followers"], r["tasks"], r["batch"], r["held"],
                 r["connect_seconds"], r["median_offered_transitions_per_second"],
                 r["median_offered_frames_per_second"], r["missing"], r["median_p50_ms"],
                 r["median_p99_ms"], r["median_frames_per_core_second"],
                 f"{r['median_foreign_cpu_share']:.0%}", goal]
            )  # fmt: skip
    report.table(
        f"SSE fan-out: medians of {len(next(iter(runs.values()))[0]['windows'])} windows",
        ["tree", "part", "followers", "tasks", "batch", "held", "connect s",
         "offered transitions/s", "offered frames/s", "missing", "p50 ms", "p99 ms",
         "frames/core-s", "other CPU", "goal"],
        rows,
    )  # fmt: skip
    if len(runs) == 2:
        (before_tree, before), (after_tree, after) = runs.items()
        ratios = []
        for b, a in zip(before, after, strict=True):
            ratios.append(
                [b["part"],
                 round(b["median_p99_ms"] / max(a["median_p99_ms"], 1e-9), 2),
                 round(a["median_frames_per_core_second"]
                       / max(b["median_frames_per_core_second"], 1e-9), 2)]
            )  # fmt: skip
        report.table(
            f"Ratios ({before_tree} ÷ {after_tree} for p99, {after_tree} ÷ {before_tree} for "
            "frames/core-s; above 1 is better)",
            ["part", "p99 before/after", "frames/core-s after/before"],
            ratios,
        )


async def run(args: argparse.Namespace) -> None:
    limit = raise_nofile_limit()
    if limit < args.followers + 100:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {args.followers} followers")
    trees: dict[str, Path] = {}
    if args.compare is not None:
        trees["before"] = args.compare
    trees["after" if args.compare is not None else "this"] = args.source
    report = Report("sse_fanout")
    runs: dict[str, list[dict[str, Any]]] = {}
    async with (
        bench_setting(args, "sse_fanout") as setting,
        writer_sessions(setting.database) as sessions,
    ):
        machine = setting.machine
        machine["compared_with"] = str(args.compare) if args.compare else None
        for label, source in trees.items():
            runs[label] = await run_tree(args, setting.database, sessions, source, setting.logs)
    print_machine(report, machine)
    print_report(report, runs)
    report.figures = {
        "machine": machine,
        "runs": runs,
        "goals": {
            "latency_p99_ms": GOAL_LATENCY_P99_MS,
            "frames_per_core_second": GOAL_FRAMES_PER_CORE_SECOND,
            "load_p99_ms": GOAL_LOAD_P99_MS,
        },
    }
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--compare", type=Path, help="run this tree first, as 'before'")
    parser.add_argument("--parts", default="", help="only these parts: latency,frames,load")
    parser.add_argument("--followers", type=int, default=10000, help="for frames and load")
    parser.add_argument("--repetitions", type=int, default=3, help="measured windows per part")
    parser.add_argument("--latency-transitions", type=int, default=50, help="per window")
    parser.add_argument("--latency-interval-ms", type=float, default=10.0)
    parser.add_argument("--load-rate", type=float, default=5000.0, help="transitions/s offered")
    parser.add_argument("--load-batch", type=int, default=100, help="tasks per transaction")
    parser.add_argument("--load-seconds", type=float, default=1.0, help="per window")
    add_following_arguments(parser, connect_timeout=240.0, drain_timeout=30.0)
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
