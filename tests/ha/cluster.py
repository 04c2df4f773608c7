"""A real primary with a synchronous standby on this machine, for failover tests.

Debian's PostgreSQL 15 binaries, data in a temporary folder, loopback ports nobody uses.
initdb refuses to run as root, so as root the servers run as the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL

from tests.fakes import unused_port

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return (BIN / "initdb").exists() and (os.geteuid() != 0 or _has_postgres_user())


def _has_postgres_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


@dataclass
class Server:
    data: Path
    port: int
    log: Path

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+asyncpg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database=database,
        )


class ReplicatedCluster:
    """`primary` streams synchronously to `standby`; `fail_over` kills one, promotes the other."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary = Server(folder / "primary", unused_port(), folder / "primary.log")
        self.standby = Server(folder / "standby", unused_port(), folder / "standby.log")
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            user=self._user,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )

    def _start(self, server: Server) -> None:
        options = f"-p {server.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(server.data), "-o", options, "-l", str(server.log),
                  "-w", "start")  # fmt: skip

    def start(self) -> None:
        if self._user is not None:
            shutil.chown(self.folder, self._user)
        self._run("initdb", "-D", str(self.primary.data), "-A", "trust", "-U", "postgres")
        with (self.primary.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "synchronous_standby_names = '*'\n"
                "wal_level = replica\nmax_wal_senders = 5\n"
                "fsync = off\nmax_connections = 200\n"
            )
        self._start(self.primary)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                  "-U", "postgres", "-D", str(self.standby.data), "-R", "-X", "stream")  # fmt: skip
        self.standby.data.chmod(0o700)
        with (self.standby.data / "postgresql.conf").open("a") as conf:
            # Once promoted it has no standby of its own: its commits must not wait for one.
            conf.write("synchronous_standby_names = ''\n")
        self._start(self.standby)

    def kill_primary(self) -> None:
        """As a crash: no shutdown checkpoint, every connection cut."""
        self._run("pg_ctl", "-D", str(self.primary.data), "-m", "immediate", "-w", "stop")

    def promote_standby(self) -> None:
        self._run("pg_ctl", "-D", str(self.standby.data), "-w", "promote")

    def stop(self) -> None:
        for server in (self.primary, self.standby):
            if (server.data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError):
                    self._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "-w", "stop")

    def environment(self, database: str) -> dict[str, str]:
        """`MANAGER_DB_POSTGRES_*` naming both servers, primary first."""
        return {
            "MANAGER_DB_POSTGRES_HOST": "127.0.0.1,127.0.0.1",
            "MANAGER_DB_POSTGRES_PORT": f"{self.primary.port},{self.standby.port}",
            "MANAGER_DB_POSTGRES_USER": "postgres",
            "MANAGER_DB_POSTGRES_PASSWORD": "unused-with-trust-auth",
            "MANAGER_DB_POSTGRES_NAME": database,
        }


@contextmanager
def replicated_cluster() -> Iterator[ReplicatedCluster]:
    with tempfile.TemporaryDirectory(prefix="ilps-ha-") as folder:
        path = Path(folder)
        path.chmod(0o755)
        cluster = ReplicatedCluster(path)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
