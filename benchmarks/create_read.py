"""Create and read at load: uploads per second, peak RSS, page latency.

    .venv/bin/python -m benchmarks.create_read [--requests 2000] [--seconds 60] ...

The service runs as `python start.py` in production mode with no workers
(MANAGER_WORKER_CONCURRENCY=0), so only the API and PostgreSQL are measured. Each part
gets a fresh service process, so its memory figures are its own.

  (a) 100 KB uploads to POST /tasks from 16 concurrent clients: tasks/s, latency.
  (b) 5 MB uploads from 16 concurrent clients: tasks/s and the service's peak RSS
      (VmRSS sampled every 20 ms, and the kernel's VmHWM).
  (c) one user with 10 000 tasks (written with SQL): GET /tasks?limit=20, first and deep
      pages by cursor, from 1 and from 8 clients: latency; and the legacy POST / (every row).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import seed_tasks
from benchmarks.listing import PAGE_SIZE, check_pages, deep_cursors, page_requests
from benchmarks.load import LoadResult, Request, closed_loop, upload_requests
from benchmarks.proc import RssSampler, memory_kb
from benchmarks.report import Report, print_machine
from benchmarks.service import Service, raise_nofile_limit, start_api_service
from benchmarks.setting import Setting, bench_setting

GOAL_TASKS_PER_SECOND = 100.0
GOAL_PEAK_RSS_MB = 200.0
GOAL_PAGE_P99_MS = 10.0


async def upload_loop(
    args: argparse.Namespace, service: Service, requests: Sequence[Request], count: int
) -> LoadResult:
    """`count` uploads from `--clients` clients, capped at `--seconds`."""
    return await closed_loop(
        service, requests, clients=args.clients, max_requests=count, max_seconds=args.seconds
    )


def mb(kilobytes: int) -> float:
    return round(kilobytes / 1024, 1)


async def part_uploads_small(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    service = start_api_service(args, setting.database, setting.logs, "bench-create-small")
    try:
        requests = upload_requests(args.small_kb * 1024, users=100)
        warm = await closed_loop(
            service, requests, clients=args.clients, max_requests=64, max_seconds=30
        )
        result = await upload_loop(args, service, requests, args.requests)
        memory = memory_kb(service.pid)
    finally:
        service.stop()
    return {
        "upload_kb": args.small_kb,
        "clients": args.clients,
        "warm_up_requests": sum(warm.statuses.values()),
        **result.figures(),
        "service_rss_mb": mb(memory["VmRSS"]),
        "service_vmhwm_mb": mb(memory["VmHWM"]),
        "goal_tasks_per_second": GOAL_TASKS_PER_SECOND,
        "goal_met": result.rate >= GOAL_TASKS_PER_SECOND and result.failed == 0,
    }


async def part_uploads_large(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    service = start_api_service(args, setting.database, setting.logs, "bench-create-large")
    try:
        idle = memory_kb(service.pid)
        requests = upload_requests(args.large_mb * 1024 * 1024, users=16)
        with RssSampler(service.pid, interval=0.02) as sampler:
            result = await upload_loop(args, service, requests, args.large_requests)
        after = memory_kb(service.pid)
    finally:
        service.stop()
    peak_mb = mb(max(sampler.peak_kb, after["VmHWM"]))
    return {
        "upload_mb": args.large_mb,
        "clients": args.clients,
        **result.figures(),
        "service_rss_idle_mb": mb(idle["VmRSS"]),
        "service_rss_peak_sampled_mb": mb(sampler.peak_kb),
        "rss_samples": sampler.samples,
        "service_vmhwm_mb": mb(after["VmHWM"]),
        "service_rss_after_mb": mb(after["VmRSS"]),
        "goal_peak_rss_mb": GOAL_PEAK_RSS_MB,
        "goal_met": peak_mb < GOAL_PEAK_RSS_MB and result.failed == 0,
    }


async def part_listing(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    user = uuid.uuid4()
    connection = await setting.database.connect()
    try:
        started = time.perf_counter()
        await seed_tasks(connection, [user] * args.tasks, audio=b"\0\0\0\0", spacing_seconds=0.001)
        seeded_in = time.perf_counter() - started
        await connection.execute("ANALYZE tasks; ANALYZE task_audio; ANALYZE task_events")
        cursors = await deep_cursors(connection, user)
        total_tasks = int(await connection.fetchval("SELECT count(*) FROM tasks"))
    finally:
        await connection.close()
    requests = page_requests(user, cursors, args.page_requests, args.first_page_share)

    service = start_api_service(args, setting.database, setting.logs, "bench-list")
    try:
        async with httpx.AsyncClient(base_url=service.base_url) as probe:
            await check_pages(probe, user, cursors)

        await closed_loop(service, requests, clients=8, max_requests=200, max_seconds=30)
        # The floor: the same HTTP stack and middleware on a route that reads nothing.
        health = await closed_loop(
            service,
            [Request("GET", "/health", {})],
            clients=1,
            max_requests=args.page_requests,
            max_seconds=args.seconds,
        )
        by_clients: dict[str, Any] = {}
        for clients in (1, 8):
            result = await closed_loop(
                service,
                requests,
                clients=clients,
                max_requests=args.page_requests,
                max_seconds=args.seconds,
            )
            figures = result.figures()
            figures["goal_met"] = (
                figures["latency"]["p99_ms"] <= GOAL_PAGE_P99_MS and result.failed == 0
            )
            by_clients[str(clients)] = figures

        legacy_request = json.dumps({"user_id": str(user)}).encode()
        legacy = await closed_loop(
            service,
            [Request("POST", "/", {"Content-Type": "application/json"}, legacy_request)],
            clients=1,
            max_requests=args.legacy_requests,
            max_seconds=args.seconds,
            request_timeout=120,
        )
        legacy_body = legacy.last.body if legacy.last is not None else b"[]"
    finally:
        service.stop()
    return {
        "user_tasks": args.tasks,
        "tasks_in_table": total_tasks,
        "seeded_in_s": round(seeded_in, 2),
        "page_size": PAGE_SIZE,
        "first_page_share": args.first_page_share,
        "deep_cursors": len(cursors),
        "clients": by_clients,
        "health_baseline_1_client": health.figures(),
        "goal_p99_ms": GOAL_PAGE_P99_MS,
        "goal_met": all(figures["goal_met"] for figures in by_clients.values()),
        "legacy_list_all": {
            **legacy.figures(),
            "response_bytes": len(legacy_body),
            "items": len(json.loads(legacy_body)),
        },
    }


def print_report(
    report: Report, small: dict[str, Any], large: dict[str, Any], listing: dict[str, Any]
) -> None:
    def goal(met: bool) -> str:
        return "met" if met else "MISSED"

    report.table(
        f"(a) {small['upload_kb']} KB uploads to POST /tasks, {small['clients']} clients",
        ["requests", "ok", "failed", "seconds", "tasks/s", "p50 ms", "p90 ms", "p99 ms",
         "max ms", "service CPU ms/task", "PostgreSQL CPU ms/task", "other CPU",
         f"goal >= {GOAL_TASKS_PER_SECOND:g}/s"],
        [[small["requests"], small["ok"], small["failed"], small["elapsed_s"],
          small["per_second"], small["latency"]["p50_ms"], small["latency"]["p90_ms"],
          small["latency"]["p99_ms"], small["latency"]["max_ms"],
          small["service_cpu_ms_per_request"], small["postgres_cpu_ms_per_request"],
          f"{small['machine']['foreign_cpu_share']:.0%}", goal(small["goal_met"])]],
    )  # fmt: skip
    report.table(
        f"(b) {large['upload_mb']} MB uploads to POST /tasks, {large['clients']} clients",
        ["requests", "ok", "failed", "tasks/s", "p50 ms", "p99 ms", "RSS idle MB",
         "peak RSS (20 ms) MB", "VmHWM MB", "other CPU", f"goal < {GOAL_PEAK_RSS_MB:g} MB"],
        [[large["requests"], large["ok"], large["failed"], large["per_second"],
          large["latency"]["p50_ms"], large["latency"]["p99_ms"], large["service_rss_idle_mb"],
          large["service_rss_peak_sampled_mb"], large["service_vmhwm_mb"],
          f"{large['machine']['foreign_cpu_share']:.0%}", goal(large["goal_met"])]],
    )  # fmt: skip

    def row(label: str, figures: dict[str, Any], verdict: str) -> list[Any]:
        return [label, figures["requests"], figures["failed"], figures["per_second"],
                figures["latency"]["p50_ms"], figures["latency"]["p90_ms"],
                figures["latency"]["p99_ms"], figures["latency"]["max_ms"],
                figures["service_cpu_ms_per_request"], figures["postgres_cpu_ms_per_request"],
                f"{figures['machine']['foreign_cpu_share']:.0%}", verdict]  # fmt: skip

    rows = [row("GET /health (no database; the floor), 1 client",
                listing["health_baseline_1_client"], "(baseline)")]  # fmt: skip
    for clients, figures in listing["clients"].items():
        rows.append(
            row(f"GET /tasks?limit=20, {clients} client(s)", figures, goal(figures["goal_met"]))
        )
    legacy = listing["legacy_list_all"]
    rows.append(
        row(f"legacy POST / ({legacy['items']:,} rows, {legacy['response_bytes'] / 1e6:.1f} MB)",
            legacy, "(comparison)")
    )  # fmt: skip
    report.table(
        f"(c) one user with {listing['user_tasks']:,} tasks "
        f"({listing['tasks_in_table']:,} in the table); "
        f"{listing['first_page_share']:.0%} first pages, the rest deep cursors",
        ["request", "requests", "failed", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
         "service CPU ms/req", "PostgreSQL CPU ms/req", "other CPU",
         f"goal p99 <= {GOAL_PAGE_P99_MS:g} ms"],
        rows,
    )  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    report = Report("create_read")
    async with bench_setting(args, "create-read") as setting:
        small = await part_uploads_small(args, setting)
        large = await part_uploads_large(args, setting)
        listing = await part_listing(args, setting)
    machine = setting.machine
    print_machine(report, machine)
    print_report(report, small, large, listing)
    report.figures = {
        "machine": machine,
        "uploads_small": small,
        "uploads_large": large,
        "listing": listing,
    }
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--clients", type=int, default=16, help="concurrent upload clients")
    parser.add_argument("--small-kb", type=int, default=100, help="size of the small uploads")
    parser.add_argument("--requests", type=int, default=2000, help="small uploads to send")
    parser.add_argument("--large-mb", type=int, default=5, help="size of the large uploads")
    parser.add_argument("--large-requests", type=int, default=200, help="large uploads to send")
    parser.add_argument("--seconds", type=float, default=120.0, help="time cap of each run")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of the listing user")
    parser.add_argument("--page-requests", type=int, default=2000, help="pages per run")
    parser.add_argument("--first-page-share", type=float, default=0.25)
    parser.add_argument("--legacy-requests", type=int, default=5, help="legacy POST / calls")
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
