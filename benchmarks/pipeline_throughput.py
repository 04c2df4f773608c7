"""Pipeline throughput: tasks per second through all stages with instant fakes.

    .venv/bin/python -m benchmarks.pipeline_throughput [--tasks 1000] [--configs 1x8,2x8,...]

For each configuration (service processes x MANAGER_WORKER_CONCURRENCY) the service
processes start in production mode against an empty, migrated database and three fake
audio services that answer at once (the tests' fakes, in a separate process). When
they are idle, one transaction inserts the tasks (with their audio and `created` event,
and the NOTIFY the create route sends); the clock runs from that transaction's `now()`
to the last `completed_at`.

Per task it reports:
  * CPU time of the service processes (user + system from /proc/<pid>/stat), and of
    PostgreSQL and of the fakes, for comparison;
  * database transactions: `xact_commit + xact_rollback` of `pg_stat_database` for the
    benchmark's database, read once the service's backends have exited (which flushes
    their counters), minus the benchmark's own queries;
  * database round trips, in a separate pass through a counting proxy between the
    service and PostgreSQL (the proxy costs CPU, so that pass's speed is not reported
    as throughput): every Sync ('S', the end of an extended-protocol exchange, as asyncpg
    sends for each prepare and each execute) and every simple Query ('Q', e.g. BEGIN,
    COMMIT) the client sent waits for PostgreSQL's answer, so their sum is the number of
    round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, counter_delta, database_snapshot, seed_tasks
from benchmarks.load import latency_summary
from benchmarks.polling import poll_until
from benchmarks.proc import CpuWatch, cpu_seconds, postgres_cpu_seconds
from benchmarks.report import Report, print_machine
from benchmarks.service import Service, raise_nofile_limit, service_environment, start_together
from benchmarks.setting import bench_setting
from benchmarks.stages import FakeStages, fake_stages

GOAL_TASKS_PER_SECOND = 100.0  # with 2 processes
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
PROTOCOL_3 = 196608


# ------------------------------------------------------------------ counting proxy


@dataclass
class WireCounts:
    """Frontend messages one client connection sent, by type byte."""

    application: str = "?"
    messages: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)  # executions by SQL text
    prepared: dict[bytes, str] = field(default_factory=dict)  # statement name -> SQL

    def observe(self, kind: bytes, body: bytes) -> None:
        self.messages[kind.decode("latin-1")] += 1
        if kind == b"P":  # Parse: name, query
            name, query = body.split(b"\0", 2)[:2]
            self.prepared[name] = _short_sql(query)
        elif kind == b"B":  # Bind: portal, statement name
            statement = body.split(b"\0", 2)[1]
            self.statements[self.prepared.get(statement, "?")] += 1
        elif kind == b"Q":  # simple Query
            self.statements[_short_sql(body.rstrip(b"\0"))] += 1

    @property
    def round_trips(self) -> int:
        return self.messages["S"] + self.messages["Q"]


def _short_sql(query: bytes) -> str:
    words = query.decode("utf-8", "replace").split()
    return " ".join(words)[:90]


class CountingProxy:
    """A TCP proxy in front of PostgreSQL that counts each client's protocol messages.

    It declines SSL (answers 'N' itself) so it can read the stream; nothing else changes.
    """

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port), or the path of a Unix socket
        self.connections: list[WireCounts] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def totals(self, *, listen: bool) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.connections:
            if counts.application.endswith("/listen") == listen:
                total.update(counts.messages)
        return total

    def statements(self) -> Counter[str]:
        """Executions by SQL text over the service's pooled connections."""
        total: Counter[str] = Counter()
        for counts in self.connections:
            if not counts.application.endswith("/listen"):
                total.update(counts.statements)
        return total

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.target, str):
            return await asyncio.open_unix_connection(self.target)
        return await asyncio.open_connection(*self.target)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts = WireCounts()
        self.connections.append(counts)
        upstream_reader, upstream_writer = await self._open_target()

        async def client_to_server() -> None:
            while True:  # startup packets: length, code, payload
                header = await reader.readexactly(8)
                length = int.from_bytes(header[:4], "big")
                code = int.from_bytes(header[4:], "big")
                payload = await reader.readexactly(length - 8)
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    writer.write(b"N")
                    await writer.drain()
                    continue
                if code == PROTOCOL_3:
                    parts = payload.split(b"\0")
                    params = dict(zip(parts[0::2], parts[1::2], strict=False))
                    counts.application = params.get(b"application_name", b"?").decode()
                upstream_writer.write(header + payload)
                break
            while True:
                kind = await reader.readexactly(1)
                size = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(size, "big") - 4)
                counts.observe(kind, body)
                upstream_writer.write(kind + size + body)
                await upstream_writer.drain()

        async def server_to_client() -> None:
            while data := await upstream_reader.read(1 << 16):
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for stream in (writer, upstream_writer):
            stream.close()


def proxy_target(database: BenchDatabase) -> tuple[str, int] | str:
    socket_dir = database.url.query.get("host")
    port = int(str(database.url.query.get("port") or database.url.port or 5432))
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return f"{socket_dir}/.s.PGSQL.{port}"
    return (database.url.host or "127.0.0.1", port)


# ---------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Config:
    processes: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.processes}x{self.concurrency}"


def parse_configs(value: str) -> list[Config]:
    configs: list[Config] = []
    if value.strip().lower() in ("", "none"):
        return configs
    for item in value.split(","):
        processes, _, concurrency = item.strip().partition("x")
        configs.append(Config(int(processes), int(concurrency)))
    return configs


def count_log_lines(services: Sequence[Service], level: str) -> int:
    total = 0
    for service in services:
        with contextlib.suppress(OSError):
            total += service.log_path.read_text(errors="replace").count(f" {level} ")
    return total


@contextlib.asynccontextmanager
async def running_services(
    args: argparse.Namespace,
    database: BenchDatabase,
    fakes: FakeStages,
    logs: Path,
    config: Config,
    *,
    database_port: int | None = None,
) -> AsyncIterator[list[Service]]:
    extra: dict[str, str | int | float] = {
        "WORKER_CONCURRENCY": config.concurrency,
        "MAX_ACTIVE_TASKS_PER_USER": args.per_user_cap,
    }
    if args.stage_concurrency:
        for stage in ("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"):
            extra[f"SERVICE_{stage}_CONCURRENCY"] = args.stage_concurrency
    environment = service_environment(database, fakes.ports, **extra)
    if database_port is not None:
        environment["MANAGER_DB_POSTGRES_HOST"] = "127.0.0.1"
        environment["MANAGER_DB_POSTGRES_PORT"] = str(database_port)
    tag = "proxied" if database_port else config.label
    services = [
        Service(f"bench-pipeline-{tag}-{number}", environment, logs, source=args.source)
        for number in range(config.processes)
    ]
    try:
        await start_together(services)  # the counting proxy on this loop keeps serving
        yield services
    finally:
        for service in services:
            service.kill()


async def run_config(
    args: argparse.Namespace,
    database: BenchDatabase,
    fakes: FakeStages,
    logs: Path,
    config: Config,
    *,
    tasks: int,
    proxy: CountingProxy | None = None,
) -> dict[str, Any]:
    await database.truncate_tasks()
    owners = [uuid.UUID(int=1 + number % args.users) for number in range(tasks)]
    audio = os.urandom(args.audio_kb * 1024 // 4 * 4)

    async with running_services(
        args, database, fakes, logs, config, database_port=proxy.port if proxy else None
    ) as services:
        await asyncio.sleep(args.settle)  # idle backends flush their statistics
        stats_before = await database_snapshot(database)
        wire_before = proxy.totals(listen=False) if proxy else Counter[str]()
        statements_before = proxy.statements() if proxy else Counter[str]()
        calls_before = fakes.calls()
        cpu_before = [cpu_seconds(service.pid) for service in services]
        postgres_before = postgres_cpu_seconds()
        fakes_before = cpu_seconds(fakes.pid)
        watch = CpuWatch([service.pid for service in services] + [fakes.pid])

        monitor = await database.connect()
        own_queries = 0

        async def count_finished() -> int:
            nonlocal own_queries
            own_queries += 1
            return int(
                await monitor.fetchval(
                    "SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed')"
                )
            )

        try:
            started = time.perf_counter()
            await seed_tasks(monitor, owners, audio=audio, notify=True)
            own_queries += 1
            await poll_until(
                count_finished,
                lambda count: count >= tasks,
                within=args.timeout,
                interval=args.poll,
            )
            wall = time.perf_counter() - started

            cpu_after = [cpu_seconds(service.pid) for service in services]
            postgres_after = postgres_cpu_seconds()
            fakes_after = cpu_seconds(fakes.pid)
            machine_cpu = watch.finish()
            calls_after = fakes.calls()
            wire_after = proxy.totals(listen=False) if proxy else Counter[str]()
            statements_after = proxy.statements() if proxy else Counter[str]()

            row = await monitor.fetchrow(
                """
                SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                       count(*) FILTER (WHERE status = 'failed') AS failed,
                       count(*) FILTER (WHERE status NOT IN ('completed', 'failed')) AS unfinished,
                       EXTRACT(EPOCH FROM max(completed_at) - min(created_at)) AS span,
                       EXTRACT(EPOCH FROM min(completed_at) - min(created_at)) AS first,
                       array_agg(EXTRACT(EPOCH FROM completed_at - created_at))
                           FILTER (WHERE completed_at IS NOT NULL) AS durations,
                       (SELECT count(*) FROM task_events) AS events
                FROM tasks
                """
            )
            own_queries += 1
        finally:
            await monitor.close()
        stop_seconds = [await asyncio.to_thread(service.stop) for service in services]
        warnings = count_log_lines(services, "WARNING")
        errors = count_log_lines(services, "ERROR")

    await asyncio.sleep(args.settle)
    stats_after = await database_snapshot(database)
    delta = counter_delta(stats_before, stats_after)
    # Our own: the seeding transaction, the polls, the final query, the first snapshot.
    own = own_queries + 1
    transactions = delta["xact_commit"] + delta["xact_rollback"] - own
    completed = int(row["completed"])
    span = float(row["span"] or 0.0)
    service_cpu = sum(after - before for before, after in zip(cpu_before, cpu_after, strict=True))
    calls = {name: calls_after[name] - calls_before[name] for name in calls_after}
    figures: dict[str, Any] = {
        "processes": config.processes,
        "worker_concurrency": config.concurrency,
        "tasks": tasks,
        "completed": completed,
        "failed": int(row["failed"]),
        "unfinished": int(row["unfinished"]),
        "seconds": round(span, 3),
        "wall_seconds": round(wall, 3),
        "tasks_per_second": round(completed / span, 1) if span else 0.0,
        "first_completed_after_s": round(float(row["first"] or 0.0), 3),
        "task_queue_to_done": latency_summary([float(v) for v in row["durations"] or []]),
        "service_cpu_ms_per_task": round(service_cpu / max(completed, 1) * 1000, 2),
        "service_cpu_utilisation": round(service_cpu / wall, 2) if wall else 0.0,
        "postgres_cpu_ms_per_task": round(
            (postgres_after - postgres_before) / max(completed, 1) * 1000, 2
        ),
        "fakes_cpu_ms_per_task": round((fakes_after - fakes_before) / max(completed, 1) * 1000, 2),
        "machine_cpu_busy": machine_cpu["machine_busy"],
        "foreign_cpu_share": machine_cpu["foreign_cpu_share"],
        "load_generator_cpu_s": machine_cpu["load_generator_cpu_s"],
        "transactions_per_task": round(transactions / max(completed, 1), 2),
        "xact_commit": delta["xact_commit"] - own,
        "xact_rollback": delta["xact_rollback"],
        # Counted by pg_stat_database: TOAST chunks and the seeding are included.
        "rows_inserted_per_task_incl_seed_and_toast": round(
            delta["tup_inserted"] / max(completed, 1), 2
        ),
        "rows_updated_per_task": round(delta["tup_updated"] / max(completed, 1), 2),
        "history_events": int(row["events"]),
        "stage_calls": calls,
        "stop_seconds": [round(value, 2) for value in stop_seconds],
        "log_warnings": warnings,
        "log_errors": errors,
    }
    if proxy is not None:
        wire = {kind: wire_after[kind] - wire_before[kind] for kind in wire_after}
        round_trips = wire.get("S", 0) + wire.get("Q", 0)
        figures["round_trips_per_task"] = round(round_trips / max(completed, 1), 2)
        figures["messages_per_task"] = {
            kind: round(count / max(completed, 1), 2) for kind, count in sorted(wire.items())
        }
        executed = statements_after - statements_before
        figures["executions_per_task_by_statement"] = {
            sql: round(count / max(completed, 1), 2) for sql, count in executed.most_common(25)
        }
        figures["listen_messages"] = dict(proxy.totals(listen=True))
        figures["proxied_connections"] = len(proxy.connections)
    return figures


# ----------------------------------------------------------------------------- report


def print_report(report: Report, runs: list[dict[str, Any]], traced: dict[str, Any]) -> None:
    def met(run: dict[str, Any]) -> str:
        if run["processes"] != 2:
            return ""
        return "met" if run["tasks_per_second"] >= GOAL_TASKS_PER_SECOND else "MISSED"

    report.table(
        "Pipeline throughput with instant fake stages (per task unless noted)",
        ["processes x workers", "tasks", "done", "failed", "seconds", "tasks/s",
         "service CPU ms", "PostgreSQL CPU ms", "fakes CPU ms", "machine busy",
         "other CPU", "transactions", "rows updated",
         f"goal >= {GOAL_TASKS_PER_SECOND:g}/s (2 proc)"],
        [[f"{run['processes']} x {run['worker_concurrency']}", run["tasks"], run["completed"],
          run["failed"] + run["unfinished"], run["seconds"], run["tasks_per_second"],
          run["service_cpu_ms_per_task"], run["postgres_cpu_ms_per_task"],
          run["fakes_cpu_ms_per_task"], f"{run['machine_cpu_busy']:.0%}",
          f"{run['foreign_cpu_share']:.0%}", run["transactions_per_task"],
          run["rows_updated_per_task"], met(run)]
         for run in runs],
    )  # fmt: skip
    messages = traced["messages_per_task"]
    report.table(
        f"Database round trips per task (1 process x {traced['worker_concurrency']} workers, "
        f"{traced['tasks']} tasks, through the counting proxy)",
        ["measure", "per task"],
        [
            ["round trips (Sync + simple Query)", traced["round_trips_per_task"]],
            ["  Sync ('S')", messages.get("S", 0.0)],
            ["  simple Query ('Q': BEGIN, COMMIT, ...)", messages.get("Q", 0.0)],
            ["Parse ('P': statements prepared)", messages.get("P", 0.0)],
            ["Execute ('E': statements executed)", messages.get("E", 0.0)],
            ["transactions (pg_stat_database)", traced["transactions_per_task"]],
            ["service connections through the proxy", traced["proxied_connections"]],
        ],
    )
    report.table(
        "Executions per task by statement (Bind of a prepared statement, or simple Query)",
        ["statement", "per task"],
        list(traced["executions_per_task_by_statement"].items()),
    )


async def run(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    report = Report("pipeline_throughput")
    configs = parse_configs(args.configs)
    async with bench_setting(args, "pipeline") as setting:
        database, logs = setting.database, setting.logs
        with fake_stages(args.wav_kb * 1024) as fakes:
            runs = []
            for config in configs:
                print(f"running {config.label} with {args.tasks} tasks ...", flush=True)
                runs.append(await run_config(args, database, fakes, logs, config, tasks=args.tasks))
            print(f"counting round trips with {args.round_trip_tasks} tasks ...", flush=True)
            proxy = CountingProxy(proxy_target(database))
            await proxy.start()
            try:
                traced = await run_config(
                    args,
                    database,
                    fakes,
                    logs,
                    Config(1, args.round_trip_concurrency),
                    tasks=args.round_trip_tasks,
                    proxy=proxy,
                )
            finally:
                await proxy.stop()
    machine = setting.machine
    print_machine(report, machine)
    print_report(report, runs, traced)
    two = [run for run in runs if run["processes"] == 2]
    report.figures = {
        "machine": machine,
        "settings": {
            "users": args.users,
            "audio_kb": args.audio_kb,
            "wav_kb": args.wav_kb,
            "max_active_tasks_per_user": args.per_user_cap,
            "stage_concurrency": args.stage_concurrency or "service defaults",
        },
        "runs": runs,
        "round_trips": traced,
        "goal_tasks_per_second_2_processes": GOAL_TASKS_PER_SECOND,
        "goal_met": bool(two)
        and max(run["tasks_per_second"] for run in two) >= GOAL_TASKS_PER_SECOND,
    }
    report.emit()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per configuration")
    parser.add_argument(
        "--configs",
        default="1x8,1x16,2x8,2x16",
        help="comma-separated PROCESSESxWORKER_CONCURRENCY (default: %(default)s)",
    )
    parser.add_argument("--users", type=int, default=100, help="owners the tasks spread over")
    parser.add_argument("--per-user-cap", type=int, default=1000, help="MAX_ACTIVE_TASKS_PER_USER")
    parser.add_argument("--audio-kb", type=int, default=100, help="size of each upload")
    parser.add_argument("--wav-kb", type=int, default=18, help="size of the fake WAV answer")
    parser.add_argument(
        "--stage-concurrency",
        type=int,
        default=0,
        help="MANAGER_SERVICE_*_CONCURRENCY for all stages (default: the service's own)",
    )
    parser.add_argument("--round-trip-tasks", type=int, default=200)
    parser.add_argument("--round-trip-concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="cap per configuration")
    parser.add_argument("--poll", type=float, default=0.1, help="completion poll interval")
    parser.add_argument(
        "--settle", type=float, default=1.5, help="quiet seconds before reading statistics"
    )
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
