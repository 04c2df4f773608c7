"""How a benchmark reports: readable tables, then one `JSON {...}` line with every figure
and the machine they were measured on."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.database import BenchDatabase
from benchmarks.service import ROOT

RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass
class Report:
    """A benchmark's readable tables and its figures (one JSON line at the end)."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        rule = "  ".join("-" * width for width in widths)
        print(f"\n{title}")
        print(rule)
        for number, row in enumerate(cells):
            print(
                "  ".join(
                    value.ljust(width) if i == 0 else value.rjust(width)
                    for i, (value, width) in enumerate(zip(row, widths, strict=True))
                )
            )
            if number == 0:
                print(rule)
        print(rule)

    def emit(self) -> None:
        """Print `JSON {...}` and keep a copy in benchmarks/results/ (git-ignored)."""
        line = json.dumps({"benchmark": self.name, **self.figures}, sort_keys=False)
        print("\nJSON " + line, flush=True)
        with contextlib.suppress(OSError):
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            (RESULTS_DIR / f"{self.name}-{stamp}.json").write_text(line + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


async def machine_info(database: BenchDatabase, source: Path = ROOT) -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    model, memory_total_kb = _cpu_and_memory()
    connection = await database.connect()
    try:
        postgres_version = str(await connection.fetchval("SHOW server_version"))
        postgres_settings = {
            name: str(await connection.fetchval(f"SHOW {name}"))
            for name in ("shared_buffers", "synchronous_commit", "max_connections")
        }
    finally:
        await connection.close()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "postgresql_settings": postgres_settings,
        "database_server": "embedded" if database.server.embedded else "machine",
        "code": _code_label(source),
    }


def _cpu_and_memory() -> tuple[str, int]:
    """The CPU model name and MemTotal (KiB) from /proc."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_total_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_total_kb = int(line.split()[1])
    return model, memory_total_kb


def _code_label(source: Path) -> str:
    return _git_revision() if source.resolve() == ROOT else f"tree at {source}"


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_revision() -> str:
    """The checked-out commit, with '+dirty' when the work tree has changes (read-only)."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git(
            "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--",
            "app", "start.py",
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def print_machine(report: Report, machine: Mapping[str, Any]) -> None:
    report.table(
        "Machine",
        ["what", "value"],
        [
            ["cores (nproc)", machine["nproc"]],
            ["CPU", machine["cpu_model"]],
            ["memory", f"{machine['memory_gib']} GiB"],
            ["PostgreSQL", f"{machine['postgresql']} ({machine['database_server']})"],
            ["Python", machine["python"]],
            ["code", machine["code"]],
            ["machine busy just before the run", f"{machine.get('busy_before_start', 0.0):.0%}"],
        ],
    )
