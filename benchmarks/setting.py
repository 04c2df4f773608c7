"""What a benchmark run stands on: a fresh database, the machine's description, a quiet
machine before anything is timed, and a folder for the services' logs."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.database import BenchDatabase, bench_database
from benchmarks.proc import wait_for_quiet_machine
from benchmarks.report import machine_info
from benchmarks.service import log_directory


@dataclass(frozen=True)
class Setting:
    database: BenchDatabase
    machine: dict[str, Any]  # reported with the figures; a benchmark may add to it
    logs: Path


@asynccontextmanager
async def bench_setting(
    args: argparse.Namespace, logs_name: str, *, database_prefix: str = "ilps_bench"
) -> AsyncIterator[Setting]:
    """The database (migrated, dropped after), the machine, the quiet wait, the logs folder."""
    async with bench_database(args, database_prefix) as database:
        machine = await machine_info(database, args.source)
        machine["busy_before_start"] = wait_for_quiet_machine(args.quiet_wait)
        with log_directory(logs_name, keep=args.keep_logs) as logs:
            yield Setting(database, machine, logs)
