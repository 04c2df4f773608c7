"""Service CPU per task, upload and pipeline together, for 100 KB and 5 MB audio.

    .venv/bin/python -m benchmarks.task_cpu [--small-tasks 200] [--large-tasks 32]
                                            [--repetitions 3] [--compare DIR]

Three fake audio services answer at once (the tests' fakes, in a process of their own;
the preprocessed WAV is sized as the real service's: mono 16 kHz from stereo 44.1 kHz).
For each upload size and each repetition, the clients (16, the raw client) send N
uploads to `POST /tasks`, one user per upload (no per-user cap slows the pipeline):

  * create only: a service with MANAGER_WORKER_CONCURRENCY=0, so only the uploads run;
  * create + pipeline: a service with its workers on (the default concurrency): the
    clock and the CPU readings run from before the first upload until every task is
    completed (polled in the database every 50 ms).

Each service is started once per size and warmed up with a few tasks; between
repetitions the tasks are truncated. Reported per task, as the median of the
repetitions: the service's CPU (user + system from /proc) for create + pipeline, for
create only, and their difference (the pipeline); PostgreSQL's and the fakes' CPU; and
tasks/s from the first upload to the last completion. `--compare DIR` measures another
tree too (e.g. an export of main before a change), interleaved with this one in every
repetition, each with its own database, so both see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, bench_database
from benchmarks.load import Request, closed_loop, upload_requests
from benchmarks.polling import poll_until
from benchmarks.proc import (
    _POSTMASTER,
    CLOCK_TICKS,
    CpuWatch,
    cpu_seconds,
    postgres_cpu_seconds,
    py_spy_recording,
    wait_for_quiet_machine,
)
from benchmarks.report import Report, machine_info, print_machine
from benchmarks.service import (
    Service,
    log_directory,
    raise_nofile_limit,
    service_environment,
    start_together,
)
from benchmarks.stages import FakeStages, fake_stages

GOAL_SMALL_CPU_MS = 6.0  # service CPU per task, create + pipeline, 100 KB
GOAL_LARGE_CPU_MS = 30.0  # the same for 5 MB uploads
WARM_UP_TASKS = 16
# The preprocessing service turns stereo 44.1 kHz PCM into mono 16 kHz WAV.
WAV_RATIO = 16_000 / (44_100 * 2)


@dataclass(frozen=True)
class Tree:
    label: str
    source: Path


@dataclass(frozen=True)
class Size:
    label: str
    upload_bytes: int
    tasks: int


async def wait_until_finished(database: BenchDatabase, tasks: int, within: float) -> int:
    """Poll until `tasks` tasks are completed or failed (or `within` s passed); the count."""
    connection = await database.connect()  # one for all polls: a connection costs a backend
    try:
        finished = await poll_until(
            lambda: connection.fetchval(
                "SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed')"
            ),
            lambda count: count >= tasks,
            within=within,
            interval=0.05,
        )
    finally:
        await connection.close()
    return int(finished)


@dataclass
class Services:
    """One tree's two services for one upload size, each on a database of its own (the
    full service's workers must not process the create-only service's uploads)."""

    tree: Tree
    create_database: BenchDatabase
    create_only: Service
    full_database: BenchDatabase
    full: Service


@contextlib.asynccontextmanager
async def running_services(
    args: argparse.Namespace,
    tree: Tree,
    databases: tuple[BenchDatabase, BenchDatabase],
    fakes: FakeStages,
    logs: Path,
    size: Size,
) -> AsyncIterator[Services]:
    common: dict[str, str | int | float] = {
        "MAX_UPLOAD_MB": max(25, size.upload_bytes // 2**20 + 1)
    }
    if args.upload_memory_mb is not None:
        common["UPLOAD_MEMORY_MB"] = args.upload_memory_mb
    tag = f"{tree.label}-{size.label}"
    create_only = Service(
        f"bench-cpu-create-{tag}",
        service_environment(databases[0], fakes.ports, WORKER_CONCURRENCY=0, **common),
        logs,
        source=tree.source,
    )
    full = Service(
        f"bench-cpu-full-{tag}",
        service_environment(databases[1], fakes.ports, **common),
        logs,
        source=tree.source,
    )
    try:
        await start_together([create_only, full])
        yield Services(tree, databases[0], create_only, databases[1], full)
    finally:
        for service in (create_only, full):
            await asyncio.to_thread(service.stop)


async def measure_create_only(
    args: argparse.Namespace,
    services: Services,
    requests: Sequence[Request],
    tasks: int,
    profile: Path | None = None,
) -> dict[str, Any]:
    await services.create_database.truncate_tasks()
    service = services.create_only
    postgres_before = postgres_cpu_with_exited()
    with py_spy_recording(service.pid, profile, rate=250):
        result = await closed_loop(
            service, requests, clients=args.clients, max_requests=tasks,
            max_seconds=args.timeout, request_timeout=120,
        )  # fmt: skip
    return {
        "ok": result.ok,
        "failed": result.failed,
        "tasks_per_second": round(result.rate, 1),
        "service_cpu_ms": round(result.service_cpu_seconds / max(result.ok, 1) * 1000, 2),
        "postgres_cpu_ms": round(
            (postgres_cpu_with_exited() - postgres_before) / max(result.ok, 1) * 1000, 2
        ),
        "other_cpu_share": result.machine.get("foreign_cpu_share", 0.0),
    }


async def measure_full(
    args: argparse.Namespace,
    services: Services,
    fakes: FakeStages,
    requests: Sequence[Request],
    tasks: int,
    profile: Path | None = None,
) -> dict[str, Any]:
    await services.full_database.truncate_tasks()
    service = services.full
    watch = CpuWatch([service.pid, fakes.pid])
    service_before = cpu_seconds(service.pid)
    postgres_before = postgres_cpu_with_exited()
    fakes_before = cpu_seconds(fakes.pid)
    started = time.perf_counter()
    with py_spy_recording(service.pid, profile, rate=250):
        uploads = await closed_loop(
            service, requests, clients=args.clients, max_requests=tasks,
            max_seconds=args.timeout, request_timeout=120,
        )  # fmt: skip
        finished = await wait_until_finished(services.full_database, uploads.ok, args.timeout)
    elapsed = time.perf_counter() - started
    service_cpu = cpu_seconds(service.pid) - service_before
    postgres_cpu = postgres_cpu_with_exited() - postgres_before
    fakes_cpu = cpu_seconds(fakes.pid) - fakes_before
    machine = watch.finish()
    done = max(finished, 1)
    return {
        "uploads_ok": uploads.ok,
        "uploads_failed": uploads.failed,
        "finished": finished,
        "tasks_failed": int(
            await services.full_database.fetchval(
                "SELECT count(*) FROM tasks WHERE status = 'failed'"
            )
        ),
        "seconds": round(elapsed, 3),
        "tasks_per_second": round(finished / elapsed, 1) if elapsed else 0.0,
        "service_cpu_ms": round(service_cpu / done * 1000, 2),
        "postgres_cpu_ms": round(postgres_cpu / done * 1000, 2),
        "fakes_cpu_ms": round(fakes_cpu / done * 1000, 2),
        "other_cpu_share": machine["foreign_cpu_share"],
    }


def postgres_cpu_with_exited() -> float:
    """CPU time of the benchmark's PostgreSQL, including backends that have exited.

    `postgres_cpu_seconds` sums the running processes, so a backend (or autovacuum
    worker) that ends between two readings takes its CPU time with it; the postmaster's
    `cutime + cstime` (children it has reaped) holds it.
    """
    if not _POSTMASTER:
        return postgres_cpu_seconds()
    fields = Path(f"/proc/{_POSTMASTER[0]}/stat").read_text().rsplit(")", 1)[1].split()
    reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return postgres_cpu_seconds() + reaped


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(run[key]) for run in runs), 2)


async def run_size(
    args: argparse.Namespace,
    trees: Sequence[Tree],
    databases: Sequence[tuple[BenchDatabase, BenchDatabase]],
    logs: Path,
    size: Size,
) -> dict[str, Any]:
    print(f"{size.label}: {size.tasks} tasks x {args.repetitions} repetitions ...", flush=True)
    requests = upload_requests(size.upload_bytes, users=max(size.tasks, WARM_UP_TASKS))
    wav_size = max(1024, int(size.upload_bytes * WAV_RATIO))
    per_tree: dict[str, dict[str, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        fakes = stack.enter_context(fake_stages(wav_size))
        all_services = [
            await stack.enter_async_context(
                running_services(args, tree, database, fakes, logs, size)
            )
            for tree, database in zip(trees, databases, strict=True)
        ]
        for services in all_services:  # warm up both services of every tree
            await measure_create_only(args, services, requests, WARM_UP_TASKS)
            await measure_full(args, services, fakes, requests, WARM_UP_TASKS)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            tree.label: {"create": [], "full": []} for tree in trees
        }
        for repetition in range(args.repetitions):
            for services in all_services:
                label = services.tree.label
                profiles: dict[str, Path | None] = {"create": None, "full": None}
                if args.profile_dir is not None and repetition == args.repetitions - 1:
                    for mode in profiles:
                        profiles[mode] = args.profile_dir / f"{label}-{size.label}-{mode}.txt"
                runs[label]["create"].append(
                    await measure_create_only(
                        args, services, requests, size.tasks, profiles["create"]
                    )
                )
                runs[label]["full"].append(
                    await measure_full(
                        args, services, fakes, requests, size.tasks, profiles["full"]
                    )
                )
    for tree in trees:
        create, full = runs[tree.label]["create"], runs[tree.label]["full"]
        total = median_of(full, "service_cpu_ms")
        create_ms = median_of(create, "service_cpu_ms")
        per_tree[tree.label] = {
            "source": str(tree.source),
            "service_cpu_ms_per_task": total,
            "create_service_cpu_ms_per_task": create_ms,
            "pipeline_service_cpu_ms_per_task": round(total - create_ms, 2),
            "postgres_cpu_ms_per_task": median_of(full, "postgres_cpu_ms"),
            "create_postgres_cpu_ms_per_task": median_of(create, "postgres_cpu_ms"),
            "fakes_cpu_ms_per_task": median_of(full, "fakes_cpu_ms"),
            "tasks_per_second": median_of(full, "tasks_per_second"),
            "create_only_tasks_per_second": median_of(create, "tasks_per_second"),
            "other_cpu_share": median_of(full, "other_cpu_share"),
            "incomplete": sum(
                run["uploads_failed"] + run["tasks_failed"] + run["uploads_ok"] - run["finished"]
                for run in full
            )
            + sum(run["failed"] for run in create),
            "runs": {"create": create, "full": full},
        }
    return {"upload_bytes": size.upload_bytes, "tasks": size.tasks, "trees": per_tree}


def print_report(report: Report, sizes: dict[str, dict[str, Any]], repetitions: int) -> None:
    rows = []
    for label, figures in sizes.items():
        goal = GOAL_SMALL_CPU_MS if label == "100KB" else GOAL_LARGE_CPU_MS
        for tree, tree_figures in figures["trees"].items():
            total = tree_figures["service_cpu_ms_per_task"]
            rows.append(
                [f"{label}, {tree}", figures["tasks"], tree_figures["service_cpu_ms_per_task"],
                 tree_figures["create_service_cpu_ms_per_task"],
                 tree_figures["pipeline_service_cpu_ms_per_task"],
                 tree_figures["postgres_cpu_ms_per_task"], tree_figures["fakes_cpu_ms_per_task"],
                 tree_figures["tasks_per_second"], tree_figures["create_only_tasks_per_second"],
                 f"{tree_figures['other_cpu_share']:.0%}", tree_figures["incomplete"],
                 f"{'met' if total <= goal else 'MISSED'} (<= {goal:g})"]
            )  # fmt: skip
    report.table(
        f"CPU per task, POST /tasks + pipeline with instant fakes (median of {repetitions})",
        ["uploads, code", "tasks", "service ms", "create ms", "pipeline ms",
         "PostgreSQL ms", "fakes ms", "tasks/s", "create-only tasks/s", "other CPU",
         "incomplete", "goal (service ms)"],
        rows,
    )  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    report = Report("task_cpu")
    trees = [Tree("this", args.source)]
    if args.compare is not None:
        trees.insert(0, Tree("compared", args.compare))
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    sizes = [
        Size("100KB", args.small_kb * 1024, args.small_tasks),
        Size(f"{args.large_mb}MB", args.large_mb * 1024 * 1024, args.large_tasks),
    ]
    async with contextlib.AsyncExitStack() as stack:
        databases = [
            (
                await stack.enter_async_context(bench_database(args, "ilps_bench")),
                await stack.enter_async_context(bench_database(args, "ilps_bench")),
            )
            for _ in trees
        ]
        machine = await machine_info(databases[-1][0], args.source)
        machine["busy_before_start"] = wait_for_quiet_machine(args.quiet_wait)
        logs = stack.enter_context(log_directory("task-cpu", keep=args.keep_logs))
        results = {
            size.label: await run_size(args, trees, databases, logs, size)
            for size in sizes
            if size.tasks > 0
        }
    print_machine(report, machine)
    print_report(report, results, args.repetitions)
    report.figures = {
        "machine": machine,
        "settings": {"clients": args.clients, "repetitions": args.repetitions},
        "sizes": results,
        "goal_service_cpu_ms": {
            "100KB": GOAL_SMALL_CPU_MS,
            f"{args.large_mb}MB": GOAL_LARGE_CPU_MS,
        },
    }
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--clients", type=int, default=16, help="concurrent upload clients")
    parser.add_argument("--small-kb", type=int, default=100, help="size of the small uploads")
    parser.add_argument("--small-tasks", type=int, default=200, help="small tasks per repetition")
    parser.add_argument("--large-mb", type=int, default=5, help="size of the large uploads")
    parser.add_argument("--large-tasks", type=int, default=32, help="large tasks per repetition")
    parser.add_argument("--repetitions", type=int, default=3, help="the median is reported")
    parser.add_argument("--timeout", type=float, default=120.0, help="cap of each measurement")
    parser.add_argument(
        "--upload-memory-mb",
        type=float,
        default=None,
        help="MANAGER_UPLOAD_MEMORY_MB of the services (default: the service's own)",
    )
    parser.add_argument(
        "--compare", type=Path, default=None, help="another tree to measure in the same run"
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="record the services during the last repetition with py-spy into this folder "
        "(py-spy on PATH; its sampling costs CPU, so such a run's figures are not comparable)",
    )
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
