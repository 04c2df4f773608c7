"""Webhook delivery: deliveries per second, and the CPU a callback adds to a task.

    .venv/bin/python -m benchmarks.webhook_delivery [--deliveries 1000] [--tasks 300]

The receiver is an HTTP/1.1 server on loopback inside this process that verifies every
signature with the `standardwebhooks` reference library and answers 204.

Part 1, delivery throughput: one service process (no pipeline workers), N tasks with a
callback ended in one transaction (the outbox trigger writes N deliveries). Reported:
deliveries per second from the first attempt's start to the last delivery's end (the
poll that finds the batch is left out), and the service's CPU per delivery (body built
at the first claim, signed, sent, result written). Median of `--repeat` runs.

Part 2, CPU added per task: one service process with the pipeline (8 workers) and the
tests' instant fake stages; `--tasks` tasks without a callback, then as many with one,
alternately, `--repeat` times each. The service's and PostgreSQL's CPU per task (from
/proc) is measured from the seeding commit until every task is terminal and, with
callbacks, every delivery delivered; the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.config import check_webhook_secrets
from app.webhooks.secrets import receiver_key, secret_text
from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, seed_tasks
from benchmarks.polling import poll_until
from benchmarks.proc import CpuWatch, cpu_seconds, postgres_cpu_seconds
from benchmarks.report import Report, print_machine
from benchmarks.service import Service, service_environment, started_healthy
from benchmarks.setting import bench_setting
from benchmarks.stages import fake_stages

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NO_STAGES = (9, 9, 9)  # part 1 runs no pipeline: the stage services are never called


@dataclass
class Receiver:
    """A minimal keep-alive HTTP/1.1 receiver that verifies each delivery."""

    verifier: Webhook | None = None  # the receiver's own secret, known once it has a port
    verified: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        [master_key] = check_webhook_secrets(SECRET)
        self.verifier = Webhook(secret_text(receiver_key(master_key, self.url)))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                assert self.verifier is not None  # set by start()
                try:
                    self.verifier.verify(body, headers, json_parse=False)
                    self.verified[headers["webhook-id"]] += 1
                except (WebhookVerificationError, KeyError):
                    self.rejected += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def start_service(
    environment: dict[str, str], logs: Path, name: str, source: Path
) -> Service:
    """In a thread: the receiver on this event loop must keep serving meanwhile."""
    return await asyncio.to_thread(started_healthy, Service(name, environment, logs, source=source))


# ------------------------------------------------------------------------ part 1


async def throughput_run(
    database: BenchDatabase, service: Service, receiver: Receiver, count: int, cap: float
) -> dict[str, Any]:
    connection = await database.connect()
    try:
        await connection.execute("TRUNCATE tasks CASCADE")
        owners = [uuid.UUID(int=1 + n % 50) for n in range(count)]
        ids = await seed_tasks(connection, owners, audio=b"\x00" * 4096)
        await connection.execute(
            "UPDATE tasks SET callback_url = $1 WHERE id = ANY($2)", receiver.url, ids
        )
        cpu_before = cpu_seconds(service.pid)
        postgres_before = postgres_cpu_seconds()
        watch = CpuWatch([service.pid])
        await connection.execute(
            "UPDATE tasks SET status = 'completed', completed_at = now() WHERE id = ANY($1)", ids
        )
        done = await wait_until_count(connection, count, cap)
        cpu = cpu_seconds(service.pid) - cpu_before
        postgres = postgres_cpu_seconds() - postgres_before
        machine = watch.finish()
        row = await connection.fetchrow(
            """
            SELECT extract(epoch FROM max(a.started_at + make_interval(secs => a.duration_seconds))
                                      - min(a.started_at)) AS span,
                   extract(epoch FROM min(a.started_at) - min(d.created_at)) AS pickup,
                   count(*) AS attempts
            FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
            """
        )
    finally:
        await connection.close()
    span = float(row["span"] or 0.0)
    return {
        "deliveries": count,
        "delivered": done,
        "attempts": int(row["attempts"]),
        "seconds": round(span, 3),
        "deliveries_per_second": round(done / span, 1) if span else 0.0,
        "first_pickup_s": round(float(row["pickup"] or 0.0), 3),
        "service_cpu_ms_per_delivery": round(cpu / max(done, 1) * 1000, 3),
        "postgres_cpu_ms_per_delivery": round(postgres / max(done, 1) * 1000, 3),
        "receiver_cpu_s": machine["load_generator_cpu_s"],
        "machine_cpu_busy": machine["machine_busy"],
        "foreign_cpu_share": machine["foreign_cpu_share"],
    }


async def wait_until_count(connection: Any, count: int, cap: float) -> int:
    done = await poll_until(
        lambda: connection.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
        ),
        lambda delivered: delivered >= count,
        within=cap,
        interval=0.05,
    )
    return int(done)


# ------------------------------------------------------------------------ part 2


async def pipeline_run(
    database: BenchDatabase,
    service: Service,
    callback_url: str | None,
    tasks: int,
    cap: float,
) -> dict[str, Any]:
    connection = await database.connect()
    try:
        await connection.execute("TRUNCATE tasks CASCADE")
        owners = [uuid.UUID(int=1 + n % 50) for n in range(tasks)]
        ids = await seed_tasks(connection, owners, audio=b"\x00" * 100 * 1024)
        cpu_before = cpu_seconds(service.pid)
        postgres_before = postgres_cpu_seconds()
        started = time.perf_counter()
        # One commit gives the tasks their callback (or none) and wakes the workers.
        await connection.execute(
            """
            WITH changed AS (UPDATE tasks SET callback_url = $2 WHERE id = ANY($1) RETURNING id)
            SELECT count(pg_notify('task_events', id::text || ':1')) FROM changed
            """,
            ids,
            callback_url,
        )

        def all_done(row: Any) -> bool:
            return bool(row["ended"] == tasks and (callback_url is None or row["sent"] == tasks))

        last = await poll_until(
            lambda: connection.fetchrow(
                """
                SELECT
                    (SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed')) AS ended,
                    (SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered') AS sent
                """
            ),
            all_done,
            within=cap,
            interval=0.05,
        )
        finished = all_done(last)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(service.pid) - cpu_before
        postgres = postgres_cpu_seconds() - postgres_before
    finally:
        await connection.close()
    return {
        "callback": callback_url is not None,
        "tasks": tasks,
        "finished": finished,
        "seconds": round(wall, 3),
        "service_cpu_ms_per_task": round(cpu / tasks * 1000, 3),
        "postgres_cpu_ms_per_task": round(postgres / tasks * 1000, 3),
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    if not runs:
        return float("nan")
    return round(float(statistics.median(run[key] for run in runs)), 3)


async def measure_pipeline(
    args: argparse.Namespace,
    database: BenchDatabase,
    logs: Path,
    receiver: Receiver,
    webhook: dict[str, str | int | float],
) -> list[dict[str, Any]]:
    """Part 2: runs without and with a callback, alternately, on one service process."""
    pipeline: list[dict[str, Any]] = []
    with fake_stages(18 * 1024) as fakes:
        environment = service_environment(
            database, fakes.ports, WORKER_CONCURRENCY=8, MAX_ACTIVE_TASKS_PER_USER=1000, **webhook
        )
        service = await start_service(environment, logs, "bench-webhooks-pipeline", args.source)
        try:
            for number in range(args.repeat):
                for url in (None, receiver.url):
                    label = "with" if url else "without"
                    print(f"{args.tasks} tasks {label} a callback ({number + 1}) ...", flush=True)
                    pipeline.append(
                        await pipeline_run(database, service, url, args.tasks, args.timeout)
                    )
        finally:
            service.stop()
    return pipeline


# ------------------------------------------------------------------------- run


async def run(args: argparse.Namespace) -> None:
    report = Report("webhook_delivery")
    receiver = Receiver()
    await receiver.start()
    webhook: dict[str, str | int | float] = {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_CONCURRENCY": args.concurrency,
        # One receiver host takes every delivery here: all the slots may go to it.
        "WEBHOOK_CONCURRENCY_PER_HOST": args.concurrency,
    }
    try:
        async with bench_setting(args, "webhooks") as setting:
            database, logs = setting.database, setting.logs
            environment = service_environment(database, NO_STAGES, WORKER_CONCURRENCY=0, **webhook)
            service = await start_service(environment, logs, "bench-webhooks", args.source)
            throughput: list[dict[str, Any]] = []
            try:
                for number in range(args.repeat):
                    print(f"delivering {args.deliveries} ({number + 1}) ...", flush=True)
                    throughput.append(
                        await throughput_run(
                            database, service, receiver, args.deliveries, args.timeout
                        )
                    )
            finally:
                service.stop()
            pipeline = (
                await measure_pipeline(args, database, logs, receiver, webhook)
                if args.tasks
                else []
            )
    finally:
        await receiver.stop()
    machine = setting.machine

    print_machine(report, machine)
    report.table(
        f"Delivery throughput: 1 process, MANAGER_WEBHOOK_CONCURRENCY={args.concurrency}",
        ["run", "delivered", "attempts", "seconds", "deliveries/s", "first pickup s",
         "service CPU ms/delivery", "PostgreSQL CPU ms/delivery", "machine busy", "other CPU"],
        [[n + 1, r["delivered"], r["attempts"], r["seconds"], r["deliveries_per_second"],
          r["first_pickup_s"], r["service_cpu_ms_per_delivery"],
          r["postgres_cpu_ms_per_delivery"], f"{r['machine_cpu_busy']:.0%}",
          f"{r['foreign_cpu_share']:.0%}"] for n, r in enumerate(throughput)],
    )  # fmt: skip
    without = [run for run in pipeline if not run["callback"]]
    with_callback = [run for run in pipeline if run["callback"]]
    summary: dict[str, float] = {
        "deliveries_per_second_median": median_of(throughput, "deliveries_per_second"),
        "service_cpu_ms_per_delivery_median": median_of(throughput, "service_cpu_ms_per_delivery"),
        "service_cpu_ms_per_task_without": median_of(without, "service_cpu_ms_per_task"),
        "service_cpu_ms_per_task_with": median_of(with_callback, "service_cpu_ms_per_task"),
        "postgres_cpu_ms_per_task_without": median_of(without, "postgres_cpu_ms_per_task"),
        "postgres_cpu_ms_per_task_with": median_of(with_callback, "postgres_cpu_ms_per_task"),
    }
    summary["service_cpu_ms_added_per_task"] = round(
        summary["service_cpu_ms_per_task_with"] - summary["service_cpu_ms_per_task_without"], 3
    )
    # Each repetition runs "without" then "with" back to back: their difference is less
    # exposed to the machine's load drifting between repetitions than the medians are.
    pairs = list(zip(without, with_callback, strict=True))
    if pairs:
        summary["service_cpu_ms_added_per_task_pairwise_median"] = round(
            statistics.median(
                w["service_cpu_ms_per_task"] - o["service_cpu_ms_per_task"] for o, w in pairs
            ),
            3,
        )
    summary["postgres_cpu_ms_added_per_task"] = round(
        summary["postgres_cpu_ms_per_task_with"] - summary["postgres_cpu_ms_per_task_without"], 3
    )
    report.table(
        f"CPU per task through the pipeline, {args.tasks} tasks, 1 process x 8 workers",
        ["run", "callback", "finished", "seconds", "service CPU ms/task", "PostgreSQL CPU ms/task"],
        [[n // 2 + 1, "yes" if r["callback"] else "no", r["finished"], r["seconds"],
          r["service_cpu_ms_per_task"], r["postgres_cpu_ms_per_task"]]
         for n, r in enumerate(pipeline)],
    )  # fmt: skip
    report.table(
        f"Medians of {args.repeat}",
        ["measure", "value"],
        [[name, value] for name, value in summary.items()],
    )
    duplicates = sum(1 for count in receiver.verified.values() if count > 1)
    print(f"\nreceiver: {sum(receiver.verified.values())} verified, {receiver.rejected} rejected, "
          f"{duplicates} ids received more than once")  # fmt: skip
    report.figures = {
        "machine": machine,
        "settings": {"concurrency": args.concurrency, "repeat": args.repeat},
        "throughput_runs": throughput,
        "pipeline_runs": pipeline,
        "summary": summary,
        "receiver": {
            "verified": sum(receiver.verified.values()),
            "rejected": receiver.rejected,
            "duplicate_ids": duplicates,
        },
    }
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--deliveries", type=int, default=1000, help="deliveries per run (part 1)")
    parser.add_argument("--tasks", type=int, default=300, help="tasks per run (part 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure (median)")
    parser.add_argument("--concurrency", type=int, default=8, help="MANAGER_WEBHOOK_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=60.0, help="cap per run")
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
