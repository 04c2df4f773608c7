"""The PostgreSQL server of the test session: the environment's, or an embedded one."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy import URL, make_url

from app.db.embedded import EmbeddedPostgres, start_embedded_postgres
from app.db.url import asyncpg_dsn

# Point the tests at an existing server with e.g. postgresql://postgres@127.0.0.1:5432/postgres;
# each session then creates (and drops) databases of its own there.
TEST_SERVER_VARIABLE = "MANAGER_TEST_DATABASE_URL"


@dataclass(frozen=True)
class SessionPostgres:
    """A server the tests may create databases on; `restart` is how fault tests bounce it."""

    admin_url: URL
    embedded: EmbeddedPostgres | None  # None when the environment named the server

    def restart(self) -> None:
        """Restart the server in place (fast shutdown: every connection is cut)."""
        if self.embedded is not None:
            server = self.embedded.server
            subprocess.run(
                [str(server.bin_path / "pg_ctl"), "-D", str(server.pgdata), "-m", "fast", "-w",
                 "restart"],
                user=server.system_user,
                check=True,
                # The restarted server inherits pg_ctl's output: a pipe would never close.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )  # fmt: skip
            return
        # A Debian-packaged cluster named by MANAGER_TEST_DATABASE_URL (docs/configuration.md):
        # pg_ctlcluster restarts it directly, as no systemd runs on CI machines.
        version = next(iter(sorted(os.listdir("/etc/postgresql"))))
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def environment(self, url: URL) -> dict[str, str]:
        """`MANAGER_DB_POSTGRES_*` variables naming `url`, for a service run as a process."""
        host = url.query.get("host") or url.host or "127.0.0.1"
        port = url.query.get("port") or url.port or 5432
        return {
            "MANAGER_DB_POSTGRES_HOST": str(host),
            "MANAGER_DB_POSTGRES_PORT": str(port),
            "MANAGER_DB_POSTGRES_USER": url.username or "postgres",
            # Required by the settings; the test server trusts local connections anyway.
            "MANAGER_DB_POSTGRES_PASSWORD": url.password or "unused-with-trust-auth",
            "MANAGER_DB_POSTGRES_NAME": url.database or "postgres",
        }

    def database_url(self, name: str) -> URL:
        return self.admin_url.set(database=name)

    async def create_database(self, prefix: str = "ilps_test") -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        connection = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.database_url(name)

    async def drop_database(self, url: URL) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        finally:
            await connection.close()


@contextmanager
def session_postgres() -> Iterator[SessionPostgres]:
    """The environment's server when configured, else an embedded one in a temporary folder."""
    configured = os.environ.get(TEST_SERVER_VARIABLE)
    if configured:
        yield SessionPostgres(
            admin_url=make_url(configured).set(drivername="postgresql+asyncpg"), embedded=None
        )
        return
    with tempfile.TemporaryDirectory(prefix="ilps-test-pg-") as folder:
        data_dir = Path(folder) / "data"
        embedded = start_embedded_postgres(data_dir, "postgres")
        try:
            yield SessionPostgres(admin_url=embedded.url, embedded=embedded)
        finally:
            embedded.stop()
