"""Stalled uploads: many connections send headers and part of a large body, then stop.

The service runs as a process; the benchmark opens `--connections` raw loopback
connections to `POST /tasks`, each declaring a 24 MiB body, sends `--send-kib` of it
and stalls. It samples the service's RSS from /proc until every connection has been
answered (or closed), and reports the peak against the documented bound: the RSS at
rest plus MANAGER_UPLOAD_MEMORY_MB. Two body shapes are tried: 24 text fields of 1 MiB,
and one 24 MiB file.

    .venv/bin/python -m benchmarks.stalled_uploads [--connections 100] [--send-kib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.proc import RssSampler, memory_kb
from benchmarks.report import Report
from benchmarks.service import Service, raise_nofile_limit, start_api_service
from benchmarks.setting import Setting, bench_setting

MIB = 1024 * 1024
FIELDS = 24
BOUNDARY = b"stalledbench"


def body_prefix(shape: str, size: int) -> tuple[bytes, int]:
    """The first `size` bytes of the body, and the whole body's declared length."""
    if shape == "fields":
        head = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="title"\r\n\r\n'
        part = len(head) + MIB + 2
        declared = FIELDS * part + len(BOUNDARY) + 6
    else:
        head = (
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="a.pcm"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        declared = len(head) + FIELDS * MIB + len(BOUNDARY) + 8
    return (head + b"a" * size)[:size], declared


async def stall(port: int, shape: str, send_bytes: int, within: float) -> tuple[str, float]:
    """One stalled upload: (its outcome, seconds until the service answered or closed)."""
    prefix, declared = body_prefix(shape, send_bytes)
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        return f"connect failed: {type(error).__name__}", 0.0
    try:
        writer.write(
            b"POST /tasks HTTP/1.1\r\nHost: bench\r\nX-User-Id: "
            + str(uuid.uuid4()).encode()
            + b"\r\nContent-Type: multipart/form-data; boundary="
            + BOUNDARY
            + b"\r\nContent-Length: "
            + str(declared).encode()
            + b"\r\n\r\n"
            + prefix
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(within):
            head = await reader.readuntil(b"\r\n\r\n")
        return head.split(b" ", 2)[1].decode(), time.monotonic() - started
    except TimeoutError:
        return "no answer", time.monotonic() - started
    except (asyncio.IncompleteReadError, ConnectionError):
        return "closed", time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def run_phase(
    service: Service, shape: str, connections: int, send_bytes: int, within: float
) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # let the previous phase's memory settle before the reading
    rest_kb = memory_kb(service.pid)["VmRSS"]
    with RssSampler(service.pid) as sampler:
        results = await asyncio.gather(
            *(stall(service.port, shape, send_bytes, within) for _ in range(connections))
        )
    answered = [seconds for outcome, seconds in results if outcome not in ("no answer",)]
    return {
        "shape": shape,
        "connections": connections,
        "sent_kib_each": send_bytes // 1024,
        "outcomes": dict(Counter(outcome for outcome, _ in results)),
        "rss_at_rest_mb": round(rest_kb / 1024, 1),
        "rss_peak_mb": round(sampler.peak_kb / 1024, 1),
        "rss_growth_mb": round((sampler.peak_kb - rest_kb) / 1024, 1),
        "last_answer_s": round(max(answered), 1) if answered else None,
        "rss_samples": sampler.samples,
    }


def start_service(args: argparse.Namespace, setting: Setting) -> Service:
    return start_api_service(
        args,
        setting.database,
        setting.logs,
        "stalled-uploads",
        raise_nofile=True,
        UPLOAD_MEMORY_MB=args.budget_mb,
    )


async def run(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    report = Report("stalled_uploads")
    phases: list[dict[str, Any]] = []
    async with bench_setting(args, "stalled-uploads") as setting:
        for shape in ("fields", "file"):
            # A fresh process per shape, so one phase's peak does not hide the other's.
            service = start_service(args, setting)
            try:
                print(f"{args.connections} stalled uploads ({shape}) ...", flush=True)
                phases.append(
                    await run_phase(
                        service, shape, args.connections, args.send_kib * 1024, args.within
                    )
                )
            finally:
                service.stop()
    machine = setting.machine
    report.table(
        "Stalled uploads: the service's RSS while they hang (bound: at rest + budget)",
        ["body", "connections", "sent KiB each", "answers", "RSS at rest MB", "RSS peak MB",
         "growth MB", "budget MB", "within bound", "last answer s"],
        [[p["shape"], p["connections"], p["sent_kib_each"],
          ", ".join(f"{k}: {v}" for k, v in sorted(p["outcomes"].items())),
          p["rss_at_rest_mb"], p["rss_peak_mb"], p["rss_growth_mb"], args.budget_mb,
          "yes" if p["rss_growth_mb"] <= args.budget_mb else "NO", p["last_answer_s"]]
         for p in phases],
    )  # fmt: skip
    report.figures = {"machine": machine, "budget_mb": args.budget_mb, "phases": phases}
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--send-kib", type=int, default=1024, help="body sent before stalling")
    parser.add_argument("--budget-mb", type=float, default=64, help="MANAGER_UPLOAD_MEMORY_MB")
    parser.add_argument(
        "--within", type=float, default=600, help="give up waiting for an answer after this"
    )
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
