"""Start-up: the image's start command to the first 200 from `/health`.

    .venv/bin/python -m benchmarks.startup [--source DIR] [--runs 3]

Runs each tree's own start command, read from the `CMD` of its Dockerfile (before:
`sh -c "alembic upgrade head && exec python start.py"`; now `python start.py`), in
production mode (MANAGER_DEBUG_MODE=false, an external PostgreSQL, workers on), with the
project's virtualenv first on PATH and the tree as working directory, and times the
process start to the first `200` from `GET /health`; then stops it with SIGTERM. Two
cases, each `--runs` starts per tree, the trees interleaved:

* `at head` — the same database, already migrated to head (the everyday restart);
* `empty` — a fresh, empty database per start (the first start, which must migrate).

Besides the wall-clock time it reports the CPU time the start took (the command's
process and its waited-for children, from /proc), which the machine's load changes far
less, and the import time of `app.main` (`python -X importtime`, median of `--runs`) with
the packages that cost most. Like the image (whose build compiles the bytecode), the
children keep their bytecode in a cache of the run's own (PYTHONPYCACHEPREFIX), filled by
one unmeasured start per tree; `--no-bytecode-cache` compiles every module at every start
instead. `--source DIR` (repeatable) adds trees measured before this checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cli import add_quiet_wait_argument, benchmark_parser
from benchmarks.database import add_database_arguments, bench_database
from benchmarks.proc import CLOCK_TICKS, wait_for_quiet_machine
from benchmarks.report import Report, machine_info, print_machine
from benchmarks.service import ROOT, log_directory
from tests.fakes import unused_port

HEALTH_WITHIN = 120.0  # seconds; a start slower than this is a failure, not a figure
STOP_WITHIN = 30.0
DEBUG_ONLY_MODULES = ("alembic", "app.sandbox", "app.demo", "app.db.embedded")


@dataclass(frozen=True)
class Tree:
    label: str
    path: Path
    command: list[str]


def image_command(tree: Path) -> list[str]:
    """The exec-form `CMD [...]` of the tree's Dockerfile (the last one: the production target)."""
    commands = [
        line.removeprefix("CMD").strip()
        for line in (tree / "Dockerfile").read_text().splitlines()
        if line.startswith("CMD [")
    ]
    if not commands:
        raise SystemExit(f"{tree}/Dockerfile has no exec-form CMD")
    command = json.loads(commands[-1])
    if not isinstance(command, list) or not all(isinstance(part, str) for part in command):
        raise SystemExit(f"{tree}/Dockerfile: CMD is not a list of strings")
    return command


def cpu_seconds_with_children(pid: int) -> float:
    """User + system CPU of a process and of its children it waited for (they survive exec)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[index]) for index in (11, 12, 13, 14)) / CLOCK_TICKS


def health_answers(port: int) -> bool:
    """One `GET /health` over a plain socket (cheap: the poller shares the two cores)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def child_environment(
    database_environment: Mapping[str, str], cache: Path, *, write_bytecode: bool
) -> dict[str, str]:
    """Production settings; bytecode only from (and to) `cache`, whatever lies in the trees."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANAGER_")}
    environment["PATH"] = (
        f"{Path(sys.executable).parent}:{environment.get('PATH', '/usr/bin:/bin')}"
    )
    # With a prefix Python reads bytecode there only: an empty one it never fills means
    # every module is compiled at every start.
    environment["PYTHONPYCACHEPREFIX"] = str(cache)
    if write_bytecode:
        environment.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
    environment.update(database_environment)
    environment.update({"MANAGER_DEBUG_MODE": "false", "MANAGER_HOST": "127.0.0.1"})
    for stage in ("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"):
        environment[f"MANAGER_SERVICE_{stage}_HOST"] = "127.0.0.1"
        environment[f"MANAGER_SERVICE_{stage}_PORT"] = str(unused_port())
    return environment


def one_start(tree: Tree, environment: Mapping[str, str], log: Path) -> dict[str, float]:
    """Start the tree's command, wait for /health, stop it; seconds to health and CPU."""
    port = unused_port()
    with log.open("ab") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            tree.command,
            cwd=tree.path,
            env={**environment, "MANAGER_PORT": str(port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = started + HEALTH_WITHIN
        while not health_answers(port):
            if process.poll() is not None:
                raise RuntimeError(f"{tree.label} exited with {process.returncode}; see {log}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{tree.label}: no 200 from /health within {HEALTH_WITHIN}s")
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds_with_children(process.pid)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_WITHIN)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return {"seconds": seconds, "cpu_seconds": cpu}


def import_profile(tree: Tree, environment: Mapping[str, str]) -> dict[str, Any]:
    """`python -X importtime -c 'import app.main'`: the total, the heaviest packages."""
    probe = (
        "import sys, time, app.main; print(len(sys.modules)); print(*sorted(sys.modules)); "
        "print(time.process_time())"
    )
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        cwd=tree.path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    by_package: collections.Counter[str] = collections.Counter()
    total_us = 0
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        module = name.strip()
        parts = module.split(".")
        by_package[".".join(parts[:2]) if parts[0] == "app" else parts[0]] += int(own)
        if module == "app.main":
            total_us = int(cumulative)
    count, modules, cpu = completed.stdout.splitlines()[:3]
    return {
        "app_main_ms": total_us / 1000,
        "process_cpu_ms": float(cpu) * 1000,  # the interpreter's own start included
        "modules": int(count),
        "debug_only_loaded": sorted(
            {m.split(".")[0] if m.startswith("alembic") else m for m in modules.split()}
            & {*DEBUG_ONLY_MODULES}
        ),
        "top_ms": {name: us / 1000 for name, us in by_package.most_common(10)},
    }


def _summary(samples: Sequence[dict[str, float]]) -> dict[str, float]:
    seconds = [sample["seconds"] for sample in samples]
    return {
        "seconds_median": statistics.median(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "cpu_seconds_median": statistics.median(sample["cpu_seconds"] for sample in samples),
    }


async def run(args: argparse.Namespace) -> None:
    report = Report("startup")
    trees = [
        Tree(f"--source {path}", path.resolve(), image_command(path)) for path in args.source
    ] + [Tree("this checkout", ROOT, image_command(ROOT))]
    cache = Path(tempfile.mkdtemp(prefix="ilps-bench-pyc-"))
    try:
        with log_directory("startup") as logs:
            await measure(args, trees, cache, logs, report)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


async def measure(
    args: argparse.Namespace, trees: Sequence[Tree], cache: Path, logs: Path, report: Report
) -> None:
    at_head: dict[str, list[dict[str, float]]] = {tree.label: [] for tree in trees}
    empty: dict[str, list[dict[str, float]]] = {tree.label: [] for tree in trees}
    imports: dict[str, list[dict[str, Any]]] = {tree.label: [] for tree in trees}
    async with bench_database(args, "ilps_bench_startup") as database:
        machine = await machine_info(database)
        environment = child_environment(
            database.environment(), cache, write_bytecode=not args.no_bytecode_cache
        )
        # Each tree restarts on a database at its own head (an older tree's Alembic
        # refuses a revision it does not know): its warm-up start migrates a database of
        # its own there, and fills the bytecode cache, as the image's build does.
        own_head: dict[str, dict[str, str]] = {}
        own_databases = []
        try:
            for tree in trees:
                url = await database.server.create_database("ilps_bench_startup_head")
                own_databases.append(url)
                own_head[tree.label] = {**environment, **database.server.environment(url)}
                await asyncio.to_thread(one_start, tree, own_head[tree.label], logs / "warm-up.log")
            machine["busy_before_start"] = wait_for_quiet_machine(args.quiet_wait)
            for _ in range(args.runs):
                for tree in trees:
                    log = logs / f"{tree.path.name}.log"
                    at_head[tree.label].append(
                        await asyncio.to_thread(one_start, tree, own_head[tree.label], log)
                    )
                    fresh = await database.server.create_database("ilps_bench_startup_empty")
                    try:
                        fresh_environment = {**environment, **database.server.environment(fresh)}
                        empty[tree.label].append(
                            await asyncio.to_thread(one_start, tree, fresh_environment, log)
                        )
                    finally:
                        await database.server.drop_database(fresh)
                    imports[tree.label].append(
                        await asyncio.to_thread(import_profile, tree, own_head[tree.label])
                    )
        finally:
            for url in own_databases:
                await database.server.drop_database(url)
    print_machine(report, machine)
    figures: dict[str, Any] = {}
    for tree in trees:
        profiles = sorted(imports[tree.label], key=lambda profile: profile["app_main_ms"])
        figures[tree.label] = {
            "command": tree.command,
            "at_head": _summary(at_head[tree.label]),
            "empty_database": _summary(empty[tree.label]),
            "import_app_main": profiles[len(profiles) // 2],  # the median run's profile
        }
    rows = []
    for tree in trees:
        tree_figures = figures[tree.label]
        for case in ("at_head", "empty_database"):
            summary = tree_figures[case]
            rows.append(
                [
                    tree.label,
                    case.replace("_", " "),
                    summary["seconds_median"],
                    summary["seconds_min"],
                    summary["seconds_max"],
                    summary["cpu_seconds_median"],
                ]
            )
    report.table(
        f"Start command to the first 200 from /health (median of {args.runs})",
        ["tree", "database", "s median", "s min", "s max", "CPU s median"],
        rows,
    )
    report.table(
        "Import of app.main (python -X importtime, median run)",
        [
            "tree",
            "app.main ms",
            "CPU ms",
            "modules",
            "debug-only modules loaded",
            "heaviest packages (self ms)",
        ],
        [
            [
                tree.label,
                figures[tree.label]["import_app_main"]["app_main_ms"],
                figures[tree.label]["import_app_main"]["process_cpu_ms"],
                figures[tree.label]["import_app_main"]["modules"],
                ", ".join(figures[tree.label]["import_app_main"]["debug_only_loaded"]) or "none",
                ", ".join(
                    f"{name} {ms:.0f}"
                    for name, ms in list(figures[tree.label]["import_app_main"]["top_ms"].items())[
                        :6
                    ]
                ),
            ]
            for tree in trees
        ],
    )
    report.figures.update(
        {
            "machine": machine,
            "runs": args.runs,
            "bytecode_cache": not args.no_bytecode_cache,
            "trees": figures,
        }
    )
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--source",
        type=Path,
        action="append",
        default=[],
        help="another tree to measure before this checkout (e.g. an export of an older commit)",
    )
    parser.add_argument("--runs", type=int, default=3, help="starts per tree and case")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module at every start (as without the image's compiled bytecode)",
    )
    add_quiet_wait_argument(parser)
    add_database_arguments(parser)
    args = parser.parse_args()
    if not 1 <= args.runs <= 9:
        parser.error("--runs must be between 1 and 9")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
