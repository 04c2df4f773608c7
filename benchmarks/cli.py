"""The command line every benchmark shares: its description, the shared options, the run."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from benchmarks.database import add_database_arguments
from benchmarks.service import ROOT

Run = Callable[[argparse.Namespace], Coroutine[Any, Any, None]]


def add_quiet_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="wait up to this long for the machine to be idle before starting",
    )


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--source, --keep-logs, --quiet-wait and the database options."""
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="the tree whose start.py is run as the service (default: this checkout)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    add_quiet_wait_argument(parser)
    add_database_arguments(parser)


def description(doc: str | None) -> str | None:
    """A benchmark's --help description: the first paragraph of its module docstring."""
    return doc.split("\n\n")[0] if doc else None


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser, described by its module docstring; it adds its own options."""
    return argparse.ArgumentParser(description=description(doc))


def run_benchmark(parser: argparse.ArgumentParser, run: Run) -> None:
    """Add the shared options after the benchmark's own, parse, and run it."""
    add_common_arguments(parser)
    asyncio.run(run(parser.parse_args()))
