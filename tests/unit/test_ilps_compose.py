"""The ILPS compose entry of deploy/ilps and the Dockerfile agree with the platform's contract.

Building and running the image is `.ci/docker-smoke`'s job (it needs a Docker engine);
these checks catch a drifting healthcheck or base image without one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "ilps" / "docker-compose.yml"
# The platform's healthcheck, run inside the container.
ILPS_HEALTHCHECK = ["CMD", "curl", "-f", "http://localhost:8064/health"]


def task_manager() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"][
        "service-task-manager"
    ]
    return service


def test_the_healthcheck_is_the_platforms() -> None:
    assert task_manager()["healthcheck"] == {
        "test": ILPS_HEALTHCHECK,
        "interval": "10s",
        "timeout": "5s",
        "retries": 10,
    }


def test_the_service_is_built_here_and_reads_the_shared_env_file() -> None:
    service = task_manager()
    assert service["build"]["context"] == "../.."
    assert service["build"]["target"] == "production"
    assert "shared.env.example" in service["env_file"]
    assert "environment" not in service  # everything comes from the shared .env
    assert service["network_mode"] == "host"


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_checks_its_health_as_the_platform_does() -> None:
    """The platform's probe and timings, on the port the service is configured to use."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK ([^\n]*)\n    CMD (\[[^\n]*\])$", dockerfile, re.M)
    assert healthcheck is not None
    shell, option, command = yaml.safe_load(healthcheck.group(2))
    assert (shell, option) == ("sh", "-c")
    assert command.startswith("curl -f")
    # 8064 (the platform's port) unless MANAGER_PORT moves the service.
    assert '"http://127.0.0.1:${MANAGER_PORT:-8064}/health"' in command
    assert healthcheck.group(1).split() == ["--interval=10s", "--timeout=5s", "--retries=10", "\\"]


def test_the_base_image_is_a_build_argument_defaulting_to_python_slim() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.M)
    assert ("${BASE_IMAGE}", "build") in stages
    assert ("${BASE_IMAGE}", "runtime") in stages
    assert stages[-1] == ("runtime", "production")  # the default target
    # curl only when the base lacks it, so bases that have it need no package index.
    assert "if ! command -v curl" in dockerfile


def test_the_build_ca_copy_never_enters_git_and_the_context_stays_small() -> None:
    assert ".build-ca.pem" in (ROOT / ".gitignore").read_text().split()
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".tools", ".git", ".env", "tests"):
        assert entry in ignored
    assert ".build-ca.pem" not in ignored
