"""The read path: a page and the legacy list against `/health`, in one process.

    .venv/bin/python -m benchmarks.reads [--stack auto,plain] [--repetitions 3] ...

One user with 10 000 tasks (written with SQL; a third completed with an accuracy, so the
lists carry floats as well as nulls). For each server stack a fresh `python start.py`
(production mode, no workers) answers, from one client, in each repetition:
`GET /health` (the floor: the same HTTP stack and middleware, no database), then
`GET /tasks?limit=20` (a quarter first pages, the rest deep cursors), then the legacy
`POST /` that returns all 10 000 rows. Each figure is the median over the repetitions;
the ratios (page ÷ health, list ÷ health, on p50) are taken within each repetition, on
the same process, and their median is reported, so a busy machine skews them less than
the absolute times.

Stacks: `auto` is `start.py` as it is (uvicorn picks uvloop and httptools when they are
installed); `plain` forces asyncio's loop and h11 through `benchmarks/stock_server.py`,
i.e. the stack before `uvicorn[standard]`. Which one ran is checked in the service's
memory map. `--source DIR` measures another tree with this virtualenv (before/after);
`--py-spy DIR` records the service with py-spy over one extra, untimed round and prints
the functions that took most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, seed_tasks
from benchmarks.listing import PAGE_SIZE, check_pages, deep_cursors, page_requests
from benchmarks.load import LoadResult, Request, closed_loop
from benchmarks.proc import py_spy_recording
from benchmarks.report import Report, print_machine
from benchmarks.service import ROOT, Service, api_only_environment, started_healthy
from benchmarks.setting import bench_setting

GOAL_LIST_RATIO = 15.0
GOAL_PAGE_RATIO = 2.0
GOAL_PAGE_P99_MS = 5.0
STOCK_LAUNCHER = ROOT / "benchmarks" / "stock_server.py"
PY_SPY = str(Path(sys.executable).parent / "py-spy")  # the virtualenv's

# A third of the tasks completed with an accuracy, a few failed with a comment.
FINISH_SOME = """
UPDATE tasks SET status = 'completed', accuracy = round((random() * 100)::numeric, 2),
       completed_at = created_at + interval '9.5 seconds'
WHERE user_id = $1 AND random() < 0.33;
UPDATE tasks SET status = 'failed', comment = 'transcribing failed: the service timed out',
       completed_at = created_at + interval '301 seconds'
WHERE user_id = $1 AND status = 'created' AND random() < 0.05;
"""


class StackService(Service):
    """`start.py` as it is (`auto`), or through the stock launcher (`plain`)."""

    def __init__(self, stack: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stack = stack

    def start(self) -> StackService:
        command = [sys.executable, str(self.source / "start.py")]
        if self.stack == "plain":
            command = [sys.executable, str(STOCK_LAUNCHER), str(self.source / "start.py")]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.source, env=self.environment, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def loaded(self, library: str) -> bool:
        """Whether a compiled module (`uvloop`, `httptools`) is mapped into the process."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return f"/{library}/" in maps


async def seed_user(database: BenchDatabase, tasks: int) -> tuple[uuid.UUID, list[str]]:
    """The listing user with `tasks` tasks; returns the user and the cursors of deep pages."""
    user = uuid.uuid4()
    connection = await database.connect()
    try:
        await seed_tasks(connection, [user] * tasks, audio=b"\0\0\0\0", spacing_seconds=0.001)
        await connection.execute(FINISH_SOME.replace("$1", f"'{user}'"))
        await connection.execute("ANALYZE tasks")
        return user, await deep_cursors(connection, user)
    finally:
        await connection.close()


def start_stack(
    args: argparse.Namespace, database: BenchDatabase, logs: Path, stack: str
) -> StackService:
    environment = api_only_environment(database)
    service = StackService(stack, f"bench-reads-{stack}", environment, logs, source=args.source)
    return started_healthy(service)


async def check_answers(service: Service, user: uuid.UUID, cursors: Sequence[str]) -> None:
    """The pages and the list are what they claim before they are timed."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as probe:
        await check_pages(probe, user, cursors)
        every = await probe.post("/", json={"user_id": str(user)})
    if every.status_code != 200 or len(every.json()) != len(cursors) * PAGE_SIZE + PAGE_SIZE:
        raise RuntimeError(f"unexpected list: {every.status_code} {every.text[:300]}")


async def one_round(
    args: argparse.Namespace, service: Service, user: uuid.UUID, pages: Sequence[Request]
) -> dict[str, LoadResult]:
    """/health, pages and the legacy list, one client each, on the same process."""

    async def loop(requests: Sequence[Request], count: int) -> LoadResult:
        return await closed_loop(
            service, requests, clients=1, max_requests=count, max_seconds=args.seconds,
            request_timeout=120,
        )  # fmt: skip

    legacy_body = json.dumps({"user_id": str(user)}).encode()
    return {
        "health": await loop([Request("GET", "/health", {})], args.health_requests),
        "page": await loop(pages, args.page_requests),
        "legacy_list": await loop(
            [Request("POST", "/", {"Content-Type": "application/json"}, legacy_body)],
            args.legacy_requests,
        ),
    }


def median(values: Iterable[float]) -> float:
    return round(statistics.median(values), 2)


def summarise(rounds: Sequence[dict[str, LoadResult]]) -> dict[str, Any]:
    """Medians over the repetitions of each figure, and of each round's ratios."""
    figures = [{name: result.figures() for name, result in one.items()} for one in rounds]
    summary: dict[str, Any] = {}
    for name in ("health", "page", "legacy_list"):
        kind = [one[name] for one in figures]
        summary[name] = {
            "p50_ms": median(f["latency"]["p50_ms"] for f in kind),
            "p99_ms": median(f["latency"]["p99_ms"] for f in kind),
            "service_cpu_ms_per_request": median(f["service_cpu_ms_per_request"] for f in kind),
            "postgres_cpu_ms_per_request": median(f["postgres_cpu_ms_per_request"] for f in kind),
            "failed": sum(f["failed"] for f in kind),
            "requests": sum(f["requests"] for f in kind),
        }
    for name in ("page", "legacy_list"):
        pairs = [(one[name], one["health"]) for one in figures]
        summary[name]["p50_ratio_to_health"] = median(
            f["latency"]["p50_ms"] / h["latency"]["p50_ms"] for f, h in pairs
        )
        summary[name]["cpu_ratio_to_health"] = median(
            f["service_cpu_ms_per_request"] / max(h["service_cpu_ms_per_request"], 1e-3)
            for f, h in pairs
        )
    summary["foreign_cpu_share"] = median(
        one["page"]["machine"]["foreign_cpu_share"] for one in figures
    )
    last = rounds[-1]["legacy_list"].last
    summary["legacy_list_bytes"] = len(last.body) if last is not None else 0
    summary["goals"] = {
        "list_ratio_le_15": summary["legacy_list"]["p50_ratio_to_health"] <= GOAL_LIST_RATIO,
        "page_ratio_le_2": summary["page"]["p50_ratio_to_health"] <= GOAL_PAGE_RATIO,
        "page_p99_le_5_ms": summary["page"]["p99_ms"] <= GOAL_PAGE_P99_MS,
    }
    summary["rounds"] = figures
    return summary


def _frame_name(frame: str) -> str:
    """`function (package/module.py:123)` -> `function (package/module.py)`."""
    return frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame


def _package(frame: str) -> str:
    """The package a frame's code belongs to (py-spy names files from their package)."""
    path = frame.partition(" (")[2].rsplit(":", 1)[0]
    return path.split("/", 1)[0] if "/" in path else path


def profile_top(raw_path: Path, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the functions and the packages with most own samples.

    Shares are of all samples, idle ones (the loop waiting in `select`) included.
    """
    own: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, samples_text = line.rpartition(" ")
        if not stack or not samples_text.isdigit():
            continue
        samples = int(samples_text)
        total += samples
        leaf = stack.rsplit(";", 1)[-1]
        own[_frame_name(leaf)] += samples
        by_package[_package(leaf)] += samples
    share = 100 / max(total, 1)
    return {
        "own": [(name, round(n * share, 1)) for name, n in own.most_common(count)],
        "by_package": [(name, round(n * share, 1)) for name, n in by_package.most_common(count)],
    }


async def profiled_round(
    args: argparse.Namespace,
    service: StackService,
    user: uuid.UUID,
    pages: Sequence[Request],
    stack: str,
) -> dict[str, Any]:
    """One more round per request kind under `py-spy record` (untimed)."""
    profiles: dict[str, Any] = {}
    legacy_body = json.dumps({"user_id": str(user)}).encode()
    kinds = {
        "page": (pages, args.page_requests),
        "legacy_list": (
            [Request("POST", "/", {"Content-Type": "application/json"}, legacy_body)],
            args.legacy_requests * 3,
        ),
    }
    for kind, (requests, count) in kinds.items():
        raw = args.py_spy / f"{stack}-{kind}.txt"
        with py_spy_recording(service.pid, raw, rate=500, executable=PY_SPY):
            await asyncio.sleep(1.0)  # py-spy attaches
            await closed_loop(
                service, requests, clients=1, max_requests=count, max_seconds=args.seconds,
                request_timeout=120,
            )  # fmt: skip
        profiles[kind] = profile_top(raw)
    return profiles


async def run(args: argparse.Namespace) -> None:
    report = Report("reads")
    results: dict[str, Any] = {}
    async with bench_setting(args, "reads") as setting:
        user, cursors = await seed_user(setting.database, args.tasks)
        pages = page_requests(user, cursors, args.page_requests, args.first_page_share)
        for stack in args.stack.split(","):
            service = start_stack(args, setting.database, setting.logs, stack)
            try:
                await check_answers(service, user, cursors)
                await one_round(args, service, user, pages)  # warm-up, not reported
                rounds = [
                    await one_round(args, service, user, pages) for _ in range(args.repetitions)
                ]
                summary = summarise(rounds)
                summary["uvloop_loaded"] = service.loaded("uvloop")
                summary["httptools_loaded"] = service.loaded("httptools")
                if args.py_spy is not None:
                    summary["profile"] = await profiled_round(args, service, user, pages, stack)
            finally:
                service.stop()
            results[stack] = summary
    machine = setting.machine
    print_machine(report, machine)
    print_report(report, args, results)
    report.figures = {"machine": machine, "user_tasks": args.tasks, "stacks": results}
    report.emit()


def print_report(report: Report, args: argparse.Namespace, results: dict[str, Any]) -> None:
    rows = []
    for stack, summary in results.items():
        label = f"{stack} (uvloop {'on' if summary['uvloop_loaded'] else 'off'}, httptools " + (
            "on)" if summary["httptools_loaded"] else "off)"
        )
        for name, title in (
            ("health", "GET /health"),
            ("page", f"GET /tasks?limit={PAGE_SIZE}"),
            ("legacy_list", f"legacy POST / ({summary['legacy_list_bytes'] / 1e6:.2f} MB)"),
        ):
            figures = summary[name]
            rows.append([
                label, title, figures["requests"], figures["failed"], figures["p50_ms"],
                figures["p99_ms"], figures["service_cpu_ms_per_request"],
                figures["postgres_cpu_ms_per_request"],
                figures.get("p50_ratio_to_health", "-"), figures.get("cpu_ratio_to_health", "-"),
            ])  # fmt: skip
        rows.append([label, "other CPU (pages)", "", "", "", "", "", "",
                     f"{summary['foreign_cpu_share']:.0%}", ""])  # fmt: skip
    report.table(
        f"one user with {args.tasks:,} tasks, one client; medians of {args.repetitions} "
        f"repetitions; goals: list ÷ health <= {GOAL_LIST_RATIO:g}, page ÷ health <= "
        f"{GOAL_PAGE_RATIO:g}, page p99 <= {GOAL_PAGE_P99_MS:g} ms",
        ["stack", "request", "requests", "failed", "p50 ms", "p99 ms", "service CPU ms/req",
         "PostgreSQL CPU ms/req", "p50 ÷ health", "CPU ÷ health"],
        rows,
    )  # fmt: skip
    for stack, summary in results.items():
        for kind, top in summary.get("profile", {}).items():
            report.table(
                f"py-spy, {stack}, {kind}: % of samples spent in a function / a package's code",
                ["function", "%", "package", "%"],
                [[own[0], own[1], package[0], package[1]]
                 for own, package in zip(top["own"], top["by_package"], strict=False)],
            )  # fmt: skip


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--stack", default="auto,plain", help="server stacks: auto, plain")
    parser.add_argument("--repetitions", type=int, default=3, help="timed rounds per stack")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of the listing user")
    parser.add_argument("--health-requests", type=int, default=1000, help="per round")
    parser.add_argument("--page-requests", type=int, default=1000, help="per round")
    parser.add_argument("--first-page-share", type=float, default=0.25)
    parser.add_argument("--legacy-requests", type=int, default=10, help="per round")
    parser.add_argument("--seconds", type=float, default=30.0, help="time cap of each loop")
    parser.add_argument("--py-spy", type=Path, default=None, help="record profiles here")
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
