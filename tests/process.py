"""The task manager run as a real process (`python start.py`), for crash and shutdown tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.fakes import unused_port
from tests.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess:
    """One `python start.py` with the given `MANAGER_*` environment on a free port."""

    def __init__(
        self, environment: dict[str, str], log_path: Path, *, ready_within: float = 90.0
    ) -> None:
        self.port = unused_port()
        # A deadline, not a wait: generous, as imports and the lifespan slow down many times
        # over when the two cores are shared with other test sessions.
        self.ready_within = ready_within
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MANAGER_")}
        self.environment = {**inherited, **environment, "MANAGER_PORT": str(self.port)}
        self.environment.setdefault("MANAGER_HOST", "127.0.0.1")
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "start.py")],
                cwd=ROOT,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            eventually_sync(
                self._healthy,
                within=self.ready_within,
                message=f"the service on {self.port} to answer",
            )
        except BaseException:
            # `with` never calls `__exit__` when `__enter__` fails: stop it here, or it outlives
            # the test session.
            self._stop()
            raise
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited early:\n{self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, within: float) -> float:
        """SIGTERM and wait for the exit; returns how long it took."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=within)
        return time.monotonic() - started

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def refused_start(environment: dict[str, str], cwd: Path) -> str:
    """Run `python start.py` with only `environment`; it must refuse at once, exit 2 and
    say why in one line, which is returned."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "start.py")],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]
