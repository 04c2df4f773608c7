"""The command-line options every load benchmark shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.database import add_database_arguments
from benchmarks.service import ROOT


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
