"""Webhook fairness: a healthy receiver's delivery latency while a silent one is flooded.

    .venv/bin/python -m benchmarks.webhook_fairness [--flood 500] [--healthy 60] [--seconds 30]

One service process (no pipeline workers, MANAGER_WEBHOOK_CONCURRENCY=8, the default
10 s attempt deadline). A silent receiver on loopback accepts connections and never
answers. `--flood` tasks of one user with their callback there end in one transaction;
then `--healthy` tasks of other users, with their callback at a verifying receiver that
answers 204 at once, end a few at a time over `--seconds`. Reported per mode: each
healthy delivery's latency from its task's end (the delivery row's `created_at`) to the
end of its delivered attempt, median, p99 and max, and how many had not arrived when the
run stopped (`--seconds` + 2 deadlines after the last ended).

Modes: `fair` (the defaults: 2 slots per receiver host, breaker after 5 failures) and
`unfair` (per-host limit = the concurrency, breaker off: how one global FIFO behaved).
The per-user cap is off (MANAGER_WEBHOOK_MAX_PENDING_PER_USER=0) in both, so the flood
is whole and the per-host limit and breaker are what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from typing import Any

from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, seed_tasks
from benchmarks.polling import poll_until
from benchmarks.report import Report, print_machine
from benchmarks.service import Service, service_environment
from benchmarks.setting import bench_setting
from benchmarks.webhook_delivery import NO_STAGES, SECRET, Receiver, start_service

TIMEOUT_SECONDS = 10.0
MODES: dict[str, dict[str, str | int | float]] = {
    "fair": {},
    "unfair": {"WEBHOOK_CONCURRENCY_PER_HOST": 8, "WEBHOOK_BREAKER_FAILURES": 1_000_000},
}


class SilentReceiver:
    """Accepts, reads, never answers."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()


async def end_tasks(connection: Any, owners: list[uuid.UUID], url: str) -> list[uuid.UUID]:
    ids = await seed_tasks(connection, owners, audio=b"\x00" * 1024)
    await connection.execute("UPDATE tasks SET callback_url = $1 WHERE id = ANY($2)", url, ids)
    await connection.execute(
        "UPDATE tasks SET status = 'completed', completed_at = now() WHERE id = ANY($1)", ids
    )
    return ids


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def fairness_run(
    args: argparse.Namespace,
    database: BenchDatabase,
    service: Service,
    healthy: Receiver,
    silent: SilentReceiver,
) -> dict[str, Any]:
    connection = await database.connect()
    try:
        await connection.execute("TRUNCATE tasks CASCADE")
        flooder = uuid.uuid4()
        await end_tasks(connection, [flooder] * args.flood, silent.url)
        batches = max(1, int(args.seconds))
        per_batch = max(1, args.healthy // batches)
        healthy_ids: list[uuid.UUID] = []
        for _ in range(batches):
            owners = [uuid.uuid4() for _ in range(per_batch)]
            healthy_ids += await end_tasks(connection, owners, healthy.url)
            await asyncio.sleep(args.seconds / batches)  # the healthy traffic's pace
        await poll_until(
            lambda: connection.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered' "
                "AND task_id = ANY($1)",
                healthy_ids,
            ),
            lambda delivered: delivered >= len(healthy_ids),
            within=2 * TIMEOUT_SECONDS + 5,
            interval=0.2,
        )
        rows = await connection.fetch(
            """
            SELECT extract(epoch FROM a.started_at + make_interval(secs => a.duration_seconds)
                                      - d.created_at) AS latency
            FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
            WHERE d.task_id = ANY($1) AND a.outcome = 'delivered'
            """,
            healthy_ids,
        )
        silent_attempts = await connection.fetchval(
            "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
            "ON d.id = a.delivery_id WHERE d.callback_url = $1",
            silent.url,
        )
    finally:
        await connection.close()
    latencies = [float(row["latency"]) for row in rows]
    return {
        "healthy": len(healthy_ids),
        "delivered": len(latencies),
        "median_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "silent_attempts": int(silent_attempts),
    }


async def run(args: argparse.Namespace) -> None:
    report = Report("webhook_fairness")
    healthy, silent = Receiver(), SilentReceiver()
    await healthy.start()
    await silent.start()
    results: dict[str, dict[str, Any]] = {}
    try:
        async with bench_setting(args, "webhook-fairness") as setting:
            for mode in args.modes:
                environment = service_environment(
                    setting.database,
                    NO_STAGES,
                    WORKER_CONCURRENCY=0,
                    WEBHOOK_SECRET=SECRET,
                    WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
                    WEBHOOK_CONCURRENCY=8,
                    WEBHOOK_TIMEOUT_SECONDS=TIMEOUT_SECONDS,
                    WEBHOOK_MAX_PENDING_PER_USER=0,
                    **MODES[mode],
                )
                service = await start_service(
                    environment, setting.logs, f"bench-fairness-{mode}", args.source
                )
                try:
                    print(f"{mode}: {args.flood} silent + {args.healthy} healthy ...", flush=True)
                    results[mode] = await fairness_run(
                        args, setting.database, service, healthy, silent
                    )
                finally:
                    service.stop()
    finally:
        await healthy.stop()
        await silent.stop()
    machine = setting.machine

    print_machine(report, machine)
    report.table(
        f"Healthy deliveries while {args.flood} go to a silent receiver (1 process, 8 slots)",
        ["mode", "healthy", "delivered", "median s", "p99 s", "max s", "silent attempts"],
        [[mode, r["healthy"], r["delivered"], r["median_s"], r["p99_s"], r["max_s"],
          r["silent_attempts"]] for mode, r in results.items()],
    )  # fmt: skip
    report.figures = {
        "machine": machine,
        "settings": {"flood": args.flood, "healthy": args.healthy, "seconds": args.seconds},
        "runs": results,
    }
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--flood", type=int, default=500, help="deliveries to the silent host")
    parser.add_argument("--healthy", type=int, default=60, help="deliveries to the healthy host")
    parser.add_argument("--seconds", type=float, default=30.0, help="healthy traffic's span")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
