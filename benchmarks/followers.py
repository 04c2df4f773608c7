"""Live followers: thousands of SSE streams on one service process.

    .venv/bin/python -m benchmarks.followers [--followers 1000,10000] [--tasks 100]

One service process (production mode, no workers) and, per phase, `--tasks` fresh tasks
written with SQL. The load generator opens the followers, spread evenly over the tasks,
as raw asyncio connections to GET /tasks/{id}/events?user_id=... (a few KB each, far
lighter than an httpx client), and counts a follower as held once its first event (the
current state) arrived.

Then it commits status transitions itself, as a worker would: one transaction that
updates `tasks.status` and appends the history event with the app's own
`app.db.history.append_event` (which NOTIFYs at commit). Every task goes
started → preprocessing → transcribing → evaluating → completed, one transaction every
`--interval-ms`, round-robin over the tasks. Each follower timestamps each event's
arrival; the latency is arrival minus the moment the COMMIT returned (and, as an upper
bound, minus the moment it was sent). The streams end on `completed`.

Reported: followers held, the service's RSS before and with them (memory per follower),
its connections to the database (pg_stat_activity rows whose application_name starts with
the service's MANAGER_SERVICE_NAME, sampled every 100 ms; the LISTEN connection is
'<name>/listen'), commit-to-arrival latency p50/p99, and the service's CPU per delivered
event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.db.history import EventRecord, append_event
from benchmarks.cli import benchmark_parser, run_benchmark
from benchmarks.database import BenchDatabase, seed_tasks, service_connections
from benchmarks.load import latency_summary
from benchmarks.polling import poll_until
from benchmarks.proc import CpuWatch, cpu_seconds, memory_kb
from benchmarks.rawhttp import iter_body, read_head
from benchmarks.report import Report, print_machine
from benchmarks.service import Service, raise_nofile_limit, start_api_service
from benchmarks.setting import bench_setting

GOAL_P99_MS = 50.0  # at 1 000 followers
GOAL_STREAMING_CONNECTIONS = 2  # at 10 000 followers
SERVICE_NAME = "bench-followers"
TRANSITIONS = ("started", "preprocessing", "transcribing", "evaluating", "completed")


@dataclass(eq=False)
class Follower:
    """One SSE client: what it received and when."""

    task_id: uuid.UUID
    user_id: uuid.UUID
    events: list[tuple[int, str, float]] = field(default_factory=list)  # (id, event, arrival)
    state: str = "new"  # new -> held -> ended | failed
    error: str = ""


async def follow(
    follower: Follower, port: int, opening: asyncio.Semaphore, held: asyncio.Event
) -> None:
    """Open the stream (at most `opening` at a time) and record every event until it ends."""
    await opening.acquire()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            opening.release()

    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET /tasks/{follower.task_id}/events?user_id={follower.user_id} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status, headers = await read_head(reader)
        if status != 200:
            follower.state, follower.error = "failed", f"HTTP {status}"
            return
        buffer = b""
        fields: dict[bytes, bytes] = {}
        async for chunk in iter_body(reader, headers):
            arrived = time.perf_counter()
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                line = line.rstrip(b"\r")
                if line:
                    if not line.startswith(b":"):  # ':' starts a comment (heartbeat)
                        name, _, value = line.partition(b":")
                        fields[name] = value[1:] if value.startswith(b" ") else value
                    continue
                if b"id" in fields:
                    follower.events.append(
                        (int(fields[b"id"]), fields.get(b"event", b"").decode(), arrived)
                    )
                    if follower.state == "new":
                        follower.state = "held"
                        held.set()
                        release()
                fields = {}
        follower.state = "ended"
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        follower.state, follower.error = "failed", type(error).__name__
    finally:
        release()
        if writer is not None:
            writer.close()


async def seed_followers(
    database: BenchDatabase, task_count: int, follower_count: int
) -> tuple[list[uuid.UUID], list[Follower]]:
    """`task_count` fresh tasks, one user each, and `follower_count` followers spread over them."""
    users = [uuid.uuid4() for _ in range(task_count)]
    connection = await database.connect()
    try:
        tasks = await seed_tasks(connection, users, audio=b"\0\0\0\0")
    finally:
        await connection.close()
    owner = dict(zip(tasks, users, strict=True))
    followers = [
        Follower(task_id=tasks[i % len(tasks)], user_id=owner[tasks[i % len(tasks)]])
        for i in range(follower_count)
    ]
    return tasks, followers


def start_following(
    followers: Sequence[Follower], port: int, concurrency: int
) -> list[asyncio.Task[None]]:
    """One runner per follower, at most `concurrency` streams opening at a time."""
    opening = asyncio.Semaphore(concurrency)
    held_signal = asyncio.Event()
    return [
        asyncio.create_task(follow(follower, port, opening, held_signal)) for follower in followers
    ]


async def stop_following(runners: Sequence[asyncio.Task[None]]) -> None:
    for runner in runners:
        runner.cancel()
    await asyncio.gather(*runners, return_exceptions=True)


def add_following_arguments(
    parser: argparse.ArgumentParser, *, connect_timeout: float, drain_timeout: float
) -> None:
    """The options of `start_following` and of the waits for the streams to open and end."""
    parser.add_argument("--connect-concurrency", type=int, default=200, help="streams opening")
    parser.add_argument("--connect-timeout", type=float, default=connect_timeout)
    parser.add_argument("--drain-timeout", type=float, default=drain_timeout)


@contextlib.asynccontextmanager
async def writer_sessions(
    database: BenchDatabase,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on one connection of their own, named so the samplers can tell it apart."""
    engine = create_async_engine(
        database.url,
        pool_size=1,
        connect_args={"server_settings": {"application_name": "benchmark-writer"}},
    )
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


@dataclass
class ConnectionSampler:
    """Samples the service's database connections every `interval` seconds; keeps maxima."""

    database: BenchDatabase
    interval: float = 0.1
    maxima: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        connection = await self.database.connect()
        try:
            while True:
                counts = await service_connections(connection, SERVICE_NAME)
                self.samples += 1
                for key, value in counts.items():
                    self.maxima[key] = max(self.maxima.get(key, 0), value)
                await asyncio.sleep(self.interval)
        finally:
            await connection.close()

    def start(self) -> None:
        self.maxima = {}
        self.samples = 0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, int]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return dict(self.maxima)


async def commit_transitions(
    sessions: async_sessionmaker[AsyncSession],
    tasks: Sequence[uuid.UUID],
    *,
    interval: float,
) -> dict[tuple[uuid.UUID, int], tuple[float, float]]:
    """Every task through the pipeline's statuses; (task, seq) -> (COMMIT sent, returned)."""
    times: dict[tuple[uuid.UUID, int], tuple[float, float]] = {}
    next_at = time.perf_counter()
    for status in TRANSITIONS:
        for task_id in tasks:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            async with sessions() as session:
                await session.execute(
                    text(
                        "UPDATE tasks SET status = :status, "
                        "accuracy = CASE WHEN :done THEN 90.0 END, "
                        "completed_at = CASE WHEN :done THEN now() END "
                        "WHERE id = :task_id"
                    ),
                    {"status": status, "done": status == "completed", "task_id": task_id},
                )
                seq = await append_event(
                    session, task_id, EventRecord(kind="status", status=status)
                )
                sent = time.perf_counter()
                await session.commit()
                times[(task_id, seq)] = (sent, time.perf_counter())
    return times


async def run_phase(
    args: argparse.Namespace,
    database: BenchDatabase,
    service: Service,
    sessions: async_sessionmaker[AsyncSession],
    count: int,
    interval_ms: float,
) -> dict[str, Any]:
    tasks, followers = await seed_followers(database, args.tasks, count)

    sampler = ConnectionSampler(database)
    sampler.start()
    rss_before = memory_kb(service.pid)["VmRSS"]
    connect_cpu_before = cpu_seconds(service.pid)
    started = time.perf_counter()
    runners = start_following(followers, service.port, args.connect_concurrency)
    await poll_until(
        lambda: all(f.state != "new" for f in followers), within=args.connect_timeout, interval=0.1
    )
    connect_seconds = time.perf_counter() - started
    connect_cpu = cpu_seconds(service.pid) - connect_cpu_before
    held = sum(1 for follower in followers if follower.state == "held")
    await asyncio.sleep(1.0)  # let the service settle before reading its memory
    rss_held = memory_kb(service.pid)["VmRSS"]
    held_before_transitions = sum(1 for follower in followers if follower.state == "held")

    # Our own collector must not pause the clocks: with 10 000 followers a full collection
    # here takes hundreds of milliseconds, which would be counted as the service's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    watch = CpuWatch([service.pid])
    service_cpu_before = cpu_seconds(service.pid)
    transitions_started = time.perf_counter()
    commits = await commit_transitions(sessions, tasks, interval=interval_ms / 1000)
    commit_seconds = [returned - sent for sent, returned in commits.values()]
    # The streams end after `completed`; wait for them (bounded).
    await poll_until(
        lambda: all(f.state != "held" for f in followers), within=args.drain_timeout, interval=0.1
    )
    service_cpu = cpu_seconds(service.pid) - service_cpu_before
    transitions_seconds = time.perf_counter() - transitions_started
    machine_cpu = watch.finish()
    gc.enable()
    gc.unfreeze()
    connections = await sampler.stop()
    await asyncio.sleep(1.0)
    rss_after = memory_kb(service.pid)["VmRSS"]

    await stop_following(runners)

    from_returned: list[float] = []
    from_sent: list[float] = []
    expected = 0
    received = 0
    for follower in followers:
        if not follower.events:
            continue
        expected += len(TRANSITIONS)
        for seq, _event, arrived in follower.events[1:]:
            moment = commits.get((follower.task_id, seq))
            if moment is None:
                continue
            received += 1
            from_sent.append(arrived - moment[0])
            from_returned.append(arrived - moment[1])
    latency = latency_summary(from_returned)
    last_arrival = max(
        (follower.events[-1][2] for follower in followers if follower.events),
        default=transitions_started,
    )
    delivery_seconds = max(last_arrival - transitions_started, 1e-9)
    offered_rate = (count / len(tasks)) / (interval_ms / 1000)  # events/s asked for
    streaming_connections = connections.get("total", 0)
    return {
        "followers": count,
        "tasks": len(tasks),
        "followers_per_task": count // len(tasks),
        "held": held,
        "held_when_transitions_began": held_before_transitions,
        "failed": sum(1 for follower in followers if follower.state == "failed"),
        "failures": sorted({follower.error for follower in followers if follower.error})[:5],
        "ended_after_completed": sum(
            1
            for follower in followers
            if follower.state == "ended"
            and follower.events
            and follower.events[-1][1] == "completed"
        ),
        "connect_seconds": round(connect_seconds, 2),
        "connects_per_second": round(held / connect_seconds, 1) if connect_seconds else 0.0,
        "service_rss_before_mb": round(rss_before / 1024, 1),
        "service_rss_held_mb": round(rss_held / 1024, 1),
        "service_rss_after_mb": round(rss_after / 1024, 1),
        "memory_per_follower_kb": round((rss_held - rss_before) / max(held, 1), 1),
        "db_connections_max": connections,
        "connection_samples": sampler.samples,
        "transitions": len(commits),
        "transition_interval_ms": interval_ms,
        "events_expected": expected,
        "events_received": received,
        "commit_ms": latency_summary(commit_seconds),
        "latency_from_commit_returned": latency,
        "latency_from_commit_sent": latency_summary(from_sent),
        "latency_min_ms": round(min(from_returned) * 1000, 2) if from_returned else None,
        "service_cpu_ms_per_connect": round(connect_cpu / max(held, 1) * 1000, 3),
        "offered_events_per_second": round(offered_rate, 1),
        "delivered_events_per_second": round(received / delivery_seconds, 1),
        "service_cpu_ms_per_event": round(service_cpu / max(received, 1) * 1000, 3),
        "service_cpu_utilisation": round(service_cpu / max(transitions_seconds, 1e-9), 2),
        "machine": machine_cpu,
        "goal_streaming_connections_met": held == count
        and streaming_connections <= GOAL_STREAMING_CONNECTIONS,
        "goal_p99_met": latency.get("p99_ms", float("inf")) < GOAL_P99_MS and received == expected,
    }


def print_report(report: Report, phases: list[dict[str, Any]]) -> None:
    report.table(
        "Followers held, memory and database connections",
        ["followers", "held", "failed", "connect s", "CPU ms/connect", "RSS before MB",
         "RSS held MB", "KB/follower", "DB conns (max)", "of which LISTEN", "busy (max)",
         "ended cleanly", f"goal: held, <= {GOAL_STREAMING_CONNECTIONS} conns"],
        [[p["followers"], p["held"], p["failed"], p["connect_seconds"],
          p["service_cpu_ms_per_connect"],
          p["service_rss_before_mb"], p["service_rss_held_mb"], p["memory_per_follower_kb"],
          p["db_connections_max"].get("total", 0), p["db_connections_max"].get("listen", 0),
          p["db_connections_max"].get("busy", 0), p["ended_after_completed"],
          "met" if p["goal_streaming_connections_met"] else "MISSED"]
         for p in phases],
    )  # fmt: skip
    report.table(
        "Latency from a status commit to the event's arrival at each follower",
        ["followers", "transitions", "events", "missing", "offered ev/s", "delivered ev/s",
         "p50 ms", "p90 ms", "p99 ms", "max ms", "p99 from COMMIT sent", "commit p50 ms",
         "service CPU ms/event", "service CPU use", "other CPU",
         f"goal p99 < {GOAL_P99_MS:g} ms (1 000)"],
        [[p["followers"], p["transitions"], p["events_received"],
          p["events_expected"] - p["events_received"], p["offered_events_per_second"],
          p["delivered_events_per_second"],
          p["latency_from_commit_returned"].get("p50_ms", "-"),
          p["latency_from_commit_returned"].get("p90_ms", "-"),
          p["latency_from_commit_returned"].get("p99_ms", "-"),
          p["latency_from_commit_returned"].get("max_ms", "-"),
          p["latency_from_commit_sent"].get("p99_ms", "-"), p["commit_ms"].get("p50_ms", "-"),
          p["service_cpu_ms_per_event"], f"{p['service_cpu_utilisation']:.0%}",
          f"{p['machine']['foreign_cpu_share']:.0%}",
          ("met" if p["goal_p99_met"] else "MISSED") if p["followers"] <= 1000 else ""]
         for p in phases],
    )  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    counts = [int(value) for value in args.followers.split(",")]
    intervals = [float(value) for value in args.interval_ms.split(",")]
    if len(intervals) == 1:
        intervals *= len(counts)
    if len(intervals) != len(counts):
        raise SystemExit("--interval-ms takes one value, or one per --followers phase")
    limit = raise_nofile_limit()
    if limit < max(counts) + 100:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {max(counts)} followers")
    report = Report("followers")
    phases: list[dict[str, Any]] = []
    async with (
        bench_setting(args, "followers") as setting,
        writer_sessions(setting.database) as sessions,
    ):
        machine = setting.machine
        machine["load_generator_nofile"] = limit
        service = start_service(args, setting.database, setting.logs)
        try:
            for count, interval in zip(counts, intervals, strict=True):
                print(f"{count} followers, a transition every {interval:g} ms ...", flush=True)
                phases.append(
                    await run_phase(args, setting.database, service, sessions, count, interval)
                )
        finally:
            service.stop()
    print_machine(report, machine)
    print_report(report, phases)
    report.figures = {
        "machine": machine,
        "phases": phases,
        "goal_p99_ms_at_1000": GOAL_P99_MS,
        "goal_streaming_connections": GOAL_STREAMING_CONNECTIONS,
    }
    report.emit()


def start_service(args: argparse.Namespace, database: BenchDatabase, logs: Path) -> Service:
    cap = max(20000, 2 * max(int(v) for v in args.followers.split(",")))
    return start_streaming_service(args, database, logs, SERVICE_NAME, cap)


def start_streaming_service(
    args: argparse.Namespace, database: BenchDatabase, logs: Path, name: str, cap: int
) -> Service:
    """An API service that holds up to `cap` streams, all of one user if need be."""
    return start_api_service(
        args,
        database,
        logs,
        name,
        raise_nofile=True,
        SSE_MAX_FOLLOWERS=cap,
        # One user per task: each user has followers/tasks streams open, far above the cap.
        SSE_MAX_FOLLOWERS_PER_USER=cap,
    )


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--followers", default="1000,10000", help="phases, comma-separated")
    parser.add_argument("--tasks", type=int, default=100, help="tasks followed per phase")
    parser.add_argument(
        "--interval-ms",
        default="20",
        help="between two committed transitions: one value, or one per phase (default: 20)",
    )
    add_following_arguments(parser, connect_timeout=300.0, drain_timeout=60.0)
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
