"""The service under test as a real process (`python start.py`, production mode)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from benchmarks.database import BenchDatabase
from tests.fakes import unused_port

ROOT = Path(__file__).resolve().parents[1]
ServiceT = TypeVar("ServiceT", bound="Service")


def raise_nofile_limit(wanted: int | None = None) -> int:
    """Raise this process's soft RLIMIT_NOFILE (to the hard limit by default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(wanted, hard)
    if hard == resource.RLIM_INFINITY and wanted is None:
        target = 1 << 20
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Service:
    """One `python start.py` (production mode) with a `MANAGER_*` environment.

    Unlike the tests' `ServiceProcess` it can run another tree (`--source`), raise the
    child's file limit (thousands of streams) and time its shutdown.
    """

    def __init__(
        self,
        name: str,
        environment: Mapping[str, str],
        log_dir: Path,
        *,
        source: Path = ROOT,
        raise_nofile: bool = False,
    ) -> None:
        self.name = name
        self.source = source.resolve()
        self.port = unused_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MANAGER_")}
        self.environment = {
            **inherited,
            "MANAGER_DEBUG_MODE": "false",
            "MANAGER_HOST": "127.0.0.1",
            "MANAGER_SERVICE_NAME": name,
            **environment,
            "MANAGER_PORT": str(self.port),
        }
        self.log_path = log_dir / f"{name}.log"
        self.raise_nofile = raise_nofile
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(self.source / "start.py")],
                cwd=self.source,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_nofile_in_child if self.raise_nofile else None,
            )
        return self

    def wait_healthy(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; log:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /health within {within}s")

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def stop(self, within: float = 30.0) -> float:
        """SIGTERM, wait for the exit (SIGKILL after `within`); returns seconds taken."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _raise_nofile_in_child() -> None:
    raise_nofile_limit()


def service_environment(
    database: BenchDatabase,
    stage_ports: Sequence[int],
    **settings: str | int | float,
) -> dict[str, str]:
    """The production-mode environment: database, the three stage services, extras.

    `settings` are `MANAGER_*` names without the prefix, e.g. `WORKER_CONCURRENCY=0`.
    """
    environment = database.environment()
    for stage, port in zip(("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"), stage_ports, strict=True):
        environment[f"MANAGER_SERVICE_{stage}_HOST"] = "127.0.0.1"
        environment[f"MANAGER_SERVICE_{stage}_PORT"] = str(port)
    for key, value in settings.items():
        environment[f"MANAGER_{key.upper()}"] = str(value)
    return environment


def start_api_service(
    args: argparse.Namespace,
    database: BenchDatabase,
    logs: Path,
    name: str,
    *,
    raise_nofile: bool = False,
    **settings: str | int | float,
) -> Service:
    """A healthy service without workers (MANAGER_WORKER_CONCURRENCY=0): only the API and
    PostgreSQL are measured."""
    environment = api_only_environment(database, **settings)
    service = Service(name, environment, logs, source=args.source, raise_nofile=raise_nofile)
    return started_healthy(service)


def api_only_environment(database: BenchDatabase, **settings: str | int | float) -> dict[str, str]:
    """The environment of a service without workers: no worker calls the stages, so any
    unused ports satisfy the production settings."""
    return service_environment(
        database,
        [unused_port(), unused_port(), unused_port()],
        WORKER_CONCURRENCY=0,
        **settings,
    )


def started_healthy(service: ServiceT) -> ServiceT:
    """`service` started and answering /health; killed if it never does."""
    service.start()
    try:
        service.wait_healthy()
    except BaseException:
        service.kill()
        raise
    return service


async def start_together(services: Sequence[Service]) -> None:
    """Start every service, then wait until each answers /health.

    In threads: a server on this event loop (a counting proxy, a webhook receiver) must
    keep serving meanwhile.
    """
    for service in services:
        await asyncio.to_thread(service.start)
    for service in services:
        await asyncio.to_thread(service.wait_healthy)


@contextlib.contextmanager
def log_directory(name: str, *, keep: bool = False) -> Iterator[Path]:
    """Service logs go to a temporary folder, kept when the run fails (or when asked)."""
    folder = Path(tempfile.mkdtemp(prefix=f"ilps-bench-{name}-"))
    failed = keep
    try:
        yield folder
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            print(f"service logs kept in {folder}", file=sys.stderr)
        else:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
