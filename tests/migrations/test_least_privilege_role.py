"""The compose example's database role: no superuser rights, and enough to migrate.

`deploy/postgres/initdb/10-task-manager-role.sh` is what the postgres container runs on
its first start; here it runs against the test server with psql, as the image would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import URL

from app.db.migrations import upgrade_to_head
from app.db.url import asyncpg_dsn
from tests.postgres import SessionPostgres

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "postgres" / "initdb" / "10-task-manager-role.sh"


def psql_directory(postgres: SessionPostgres) -> str | None:
    """A psql of 15 or newer (the script uses \\getenv): the embedded server's, or the PATH's."""
    if postgres.embedded is not None:
        return str(postgres.embedded.server.bin_path)
    found = shutil.which("psql")
    return str(Path(found).parent) if found else None


async def admin_execute(postgres: SessionPostgres, *statements: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(postgres.admin_url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
async def role_database(postgres: SessionPostgres) -> AsyncIterator[URL]:
    """The script run with a unique role and database; their URL, dropped afterwards."""
    binaries = psql_directory(postgres)
    if binaries is None:
        pytest.skip("no psql on this machine")
    suffix = uuid.uuid4().hex[:10]
    role, database, password = f"tm_role_{suffix}", f"tm_tasks_{suffix}", f"pw-{suffix}"
    admin = postgres.admin_url
    environment = {
        "PATH": f"{binaries}:/usr/bin:/bin",
        "PGHOST": str(admin.query.get("host") or admin.host or "127.0.0.1"),
        "PGPORT": str(admin.query.get("port") or admin.port or 5432),
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": admin.database or "postgres",
        "MANAGER_DB_POSTGRES_USER": role,
        "MANAGER_DB_POSTGRES_NAME": database,
        "MANAGER_DB_POSTGRES_PASSWORD": password,
    }
    if admin.password:
        environment["PGPASSWORD"] = admin.password
    try:
        completed = await asyncio.to_thread(
            subprocess.run,
            ["bash", str(SCRIPT)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        assert password not in completed.stdout + completed.stderr
        yield admin.set(username=role, password=password, database=database)
    finally:
        await admin_execute(
            postgres,
            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            f'DROP ROLE IF EXISTS "{role}"',
        )


async def test_the_role_has_no_superuser_rights(
    postgres: SessionPostgres, role_database: URL
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(postgres.admin_url))
    try:
        flags = await connection.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
            "rolcanlogin FROM pg_roles WHERE rolname = $1",
            role_database.username,
        )
        owner = await connection.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            role_database.database,
        )
        public_may_connect = await connection.fetchval(
            "SELECT has_database_privilege('public', $1, 'CONNECT')", role_database.database
        )
    finally:
        await connection.close()
    assert flags is not None
    assert dict(flags) == {
        "rolsuper": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
        "rolreplication": False,
        "rolbypassrls": False,
        "rolcanlogin": True,
    }
    assert owner == role_database.username
    assert public_may_connect is False


async def test_the_role_runs_every_migration_itself(role_database: URL) -> None:
    await upgrade_to_head(role_database)
    connection = await asyncpg.connect(asyncpg_dsn(role_database))
    try:
        owners = await connection.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        await connection.execute("SELECT count(*) FROM tasks")
    finally:
        await connection.close()
    assert [row["tableowner"] for row in owners] == [role_database.username]


def test_the_script_is_executable() -> None:
    # The image runs executable *.sh files; others it sources into its own shell.
    assert os.access(SCRIPT, os.X_OK)
