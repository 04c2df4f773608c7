"""The tests' fake audio services (tests/fakes.py), run in a process of their own.

A separate process keeps their CPU time apart from the load generator's and the
service's (it is reported per task). The parent talks to it over its stdin and stdout:
the child prints `PORTS <preprocessing> <transcribing> <feedback>` once it serves, answers
each line `calls` with the number of requests each fake has served, and exits when its
stdin closes.

    python -m benchmarks.stages WAV_SIZE
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.service import ROOT
from tests.fakes import running_fakes

NAMES = ("preprocessing", "transcribing", "feedback")


def main() -> None:
    wav_size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with running_fakes() as fakes:
        fakes.preprocessing.wav_size = wav_size
        print("PORTS " + " ".join(str(stage.port) for stage in fakes.all()), flush=True)
        for line in sys.stdin:
            if line.strip() == "calls":
                print(" ".join(str(stage.count()) for stage in fakes.all()), flush=True)


@dataclass
class FakeStages:
    """The three fake audio services' process and ports."""

    process: subprocess.Popen[str]
    ports: tuple[int, int, int]

    @property
    def pid(self) -> int:
        return self.process.pid

    def calls(self) -> dict[str, int]:
        """Requests served by each fake so far."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("calls\n")
        self.process.stdin.flush()
        counts = self.process.stdout.readline().split()
        return dict(zip(NAMES, (int(count) for count in counts), strict=True))


@contextlib.contextmanager
def fake_stages(wav_size: int = 1024) -> Iterator[FakeStages]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.stages", str(wav_size)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if not line or line[0] != "PORTS":
            raise RuntimeError("the fake stage process did not start")
        a, b, c = (int(port) for port in line[1:4])
        yield FakeStages(process=process, ports=(a, b, c))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=5)


if __name__ == "__main__":
    main()
