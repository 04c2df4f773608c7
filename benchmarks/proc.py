"""Readings from /proc: CPU time and memory of processes, how busy the machine is.

On two cores any other busy process skews every figure, so each benchmark reports the
share of the machine's CPU that went to processes it does not know ("foreign").
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since start) of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


# The postmaster of the benchmark's server, once known: only it and its children count as
# "PostgreSQL" (other clusters on the machine, e.g. a test session's embedded one, do not).
_POSTMASTER: list[int] = []


def note_postmaster(data_directory: str) -> None:
    """Remember the postmaster of the server whose data directory this is."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
        _POSTMASTER[:] = [pid]


def postgres_cpu_seconds() -> float:
    """CPU time of the benchmark's PostgreSQL: the postmaster and its running children
    (every `postgres` process when the postmaster is unknown)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        if _POSTMASTER:
            ours = int(entry.name) in _POSTMASTER or int(fields[1]) in _POSTMASTER
        else:
            ours = comm.startswith("postgres")
        if ours:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(value) for value in first]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU time of this (load generator) process so far."""
    times = os.times()
    return times.user + times.system


class CpuWatch:
    """Machine-wide CPU use over an interval, split into the processes we know and the rest.

    `foreign` is what other processes (anything not listed, not PostgreSQL, not us) used:
    a busy neighbour makes every figure of the run worse.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.busy, self.total = machine_busy_seconds()
        self.known = sum(cpu_seconds(pid) for pid in self.pids)
        self.postgres = postgres_cpu_seconds()
        self.own = own_cpu_seconds()

    def finish(self) -> dict[str, float]:
        busy, total = machine_busy_seconds()
        known = sum(cpu_seconds(pid) for pid in self.pids) - self.known
        postgres = postgres_cpu_seconds() - self.postgres
        own = own_cpu_seconds() - self.own
        elapsed_cores = max(total - self.total, 1e-9)
        used = busy - self.busy
        return {
            "machine_busy": round(used / elapsed_cores, 3),
            "service_and_helpers_cpu_s": round(known, 2),
            "postgres_cpu_s": round(postgres, 2),
            "load_generator_cpu_s": round(own, 2),
            "foreign_cpu_share": round(max(0.0, used - known - postgres - own) / elapsed_cores, 3),
        }


def wait_for_quiet_machine(within: float, *, threshold: float = 0.15) -> float:
    """Wait (up to `within` s) until the machine is mostly idle; returns the last busy share."""
    deadline = time.monotonic() + within
    share = 1.0
    while True:
        busy, total = machine_busy_seconds()
        time.sleep(1.0)
        busy_after, total_after = machine_busy_seconds()
        share = (busy_after - busy) / max(total_after - total, 1e-9)
        if share <= threshold or time.monotonic() >= deadline:
            break
        print(f"the machine is {share:.0%} busy; waiting for it to go quiet ...", flush=True)
    return round(share, 3)


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak_kb = max(self.peak_kb, memory_kb(self.pid)["VmRSS"])
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def py_spy_recording(
    pid: int, output: Path | None, *, rate: int, executable: str = "py-spy"
) -> Iterator[None]:
    """Record a process with py-spy (raw collapsed stacks into `output`) while the block
    runs; nothing when `output` is None. SIGINT makes py-spy write its output and exit."""
    if output is None:
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
         "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(timeout=5)
