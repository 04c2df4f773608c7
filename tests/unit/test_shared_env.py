"""The ILPS platform's shared .env: one file for every service, read by the settings.

The platform hands the task manager the same .env as every other service (through the
environment in compose, or as a `.env` file the settings read). Variables of other
services, and MANAGER_* names this service does not know, must be ignored, never an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigurationError, Settings, load_settings
from tests.environment import clear_manager_environment

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "ilps" / "shared.env.example"

# Other services' variables, as the platform's set-up script writes them.
FOREIGN = {
    "DEBUG_MODE": "True",
    "POSTGRES_PASSWORD": "postgres-secret",
    "PGADMIN_DEFAULT_EMAIL": "admin@example.org",
    "PGADMIN_DEFAULT_PASSWORD": "pgadmin-secret",
    "GATEWAY_DEBUG_MODE": "False",
    "GATEWAY_SERVICE_MANAGER_HOST": "service-task-manager",
    "GATEWAY_SERVICE_MANAGER_PORT": "8064",
    "AUTH_DB_POSTGRES_PASSWORD": "auth-secret",
    "AUTH_JWT_SECRET": "short",
    "TEXTS_DB_POSTGRES_HOST": "postgres",
    "PREPROCESSING_DEBUG_MODE": "True",
    "TRANSCRIBING_MODEL_LANGUAGES": "english",
    "FEEDBACK_SERVICE_TEXTS_HOST": "service-texts",
    # MANAGER_* names that are no settings, including ones that share a setting's prefix.
    "MANAGER_SOMETHING_UNKNOWN": "1",
    "MANAGER_SOMETHING": "not-json",
    "MANAGER_DEBUG": "not-a-bool",
    "MANAGER_DEBUG_MODE_LEGACY": "not-a-bool",
    "MANAGER_DB": "{",
    "MANAGER_DB_POSTGRES": "not-json",
    "MANAGER_DB_POSTGRES_SSLMODE": "require",
    "MANAGER_SERVICE": "{",
    "MANAGER_SERVICE_TEXTS_HOST": "service-texts",
    "MANAGER_SERVICE_TEXTS_PORT": "not-a-port",
    "MANAGER_SERVICE_FEEDBACK_RETRIES": "not-a-number",
    "MANAGER_SERVICE_FEEDBACK_HOST_ALIAS": "fb",
    "MANAGER_PORT_PUBLISHED": "not-a-port",
    "MANAGER_AUTH_JWT": "x",
}

# The task manager's own lines in the platform's .env (development: all hosts set).
ILPS_MANAGER_LINES = {
    "MANAGER_DEBUG_MODE": "True",
    "MANAGER_DB_POSTGRES_PASSWORD": "manager-secret",
    "MANAGER_DB_POSTGRES_HOST": "postgres",
    "MANAGER_SERVICE_PREPROCESSING_HOST": "service-preprocessing",
    "MANAGER_SERVICE_PREPROCESSING_PORT": "8065",
    "MANAGER_SERVICE_TRANSCRIBING_HOST": "service-transcribing",
    "MANAGER_SERVICE_TRANSCRIBING_PORT": "8066",
    "MANAGER_SERVICE_FEEDBACK_HOST": "service-feedback",
    "MANAGER_SERVICE_FEEDBACK_PORT": "8067",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_manager_environment(monkeypatch, tmp_path, also=FOREIGN)


def write_dotenv(folder: Path, variables: dict[str, str]) -> None:
    (folder / ".env").write_text("".join(f"{name}={value}\n" for name, value in variables.items()))


def assert_ilps_development(settings: Settings) -> None:
    """All hosts set: the configured database and services, never embedded or sandboxed."""
    assert settings.debug_mode is True
    assert not settings.uses_embedded_database
    assert settings.sandboxed_stages() == []
    assert settings.db_postgres_host == "postgres"
    assert settings.db_postgres_user == "service_task_manager"
    assert settings.db_postgres_name == "tasks"
    assert settings.service("preprocessing").base_url == "http://service-preprocessing:8065"
    assert settings.service("transcribing").base_url == "http://service-transcribing:8066"
    assert settings.service("feedback").base_url == "http://service-feedback:8067"
    assert (settings.host, settings.port) == ("0.0.0.0", 8064)
    # AUTH_JWT_SECRET is the auth service's: the resource routes keep trusting the gateway.
    assert settings.auth_jwt_secret is None


def test_foreign_variables_in_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**FOREIGN, **ILPS_MANAGER_LINES}.items():
        monkeypatch.setenv(name, value)
    assert_ilps_development(load_settings())


def test_foreign_variables_in_a_dotenv_file_are_ignored(tmp_path: Path) -> None:
    write_dotenv(tmp_path, {**FOREIGN, **ILPS_MANAGER_LINES})
    assert_ilps_development(load_settings())


def test_the_environment_and_the_dotenv_file_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_dotenv(tmp_path, {**FOREIGN, **ILPS_MANAGER_LINES, "MANAGER_DEBUG_MODE": "False"})
    for name, value in FOREIGN.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MANAGER_DEBUG_MODE", "True")  # the environment wins over the file
    assert_ilps_development(load_settings())


def test_ilps_production_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_dotenv(tmp_path, {**FOREIGN, **ILPS_MANAGER_LINES, "MANAGER_DEBUG_MODE": "False"})
    settings = load_settings()
    assert settings.debug_mode is False
    assert not settings.uses_embedded_database
    assert settings.sandboxed_stages() == []
    assert settings.logs_as_json


def test_debug_mode_without_hosts_is_refused(tmp_path: Path) -> None:
    """Debug mode alone never stands in for a host: no made-up assessments by mistake."""
    write_dotenv(tmp_path, {**FOREIGN, "MANAGER_DEBUG_MODE": "True"})
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert "MANAGER_DB_POSTGRES_HOST" in str(error.value)
    assert "MANAGER_SERVICE_FEEDBACK_HOST" in str(error.value)


def test_development_opt_ins_without_hosts_mean_embedded_and_sandbox(tmp_path: Path) -> None:
    """The zero-setup run (no hosts, opt-ins given) is unchanged by the foreign variables."""
    opt_ins = {"MANAGER_SANDBOX_SERVICES": "True", "MANAGER_DB_EMBEDDED": "True"}
    write_dotenv(tmp_path, {**FOREIGN, "MANAGER_DEBUG_MODE": "True", **opt_ins})
    settings = load_settings()
    assert settings.uses_embedded_database
    assert settings.sandboxed_stages() == ["preprocessing", "transcribing", "feedback"]


def test_the_sample_shared_env_is_accepted_as_a_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(SAMPLE.read_text())
    settings = load_settings()
    assert settings.debug_mode is True
    assert not settings.uses_embedded_database
    assert settings.sandboxed_stages() == []


def test_the_sample_shared_env_carries_other_services_variables() -> None:
    names = {
        line.split("=", 1)[0]
        for line in SAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    for prefix in ("POSTGRES_PASSWORD", "PGADMIN_", "GATEWAY_", "AUTH_JWT_SECRET", "TEXTS_"):
        assert any(name.startswith(prefix) for name in names), prefix
    assert set(ILPS_MANAGER_LINES) <= names


def test_a_foreign_name_that_extends_a_setting_is_not_read_into_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "_" nests: MANAGER_SERVICE_FEEDBACK_HOST_ALIAS once became feedback.host = {"alias": ...}.
    monkeypatch.setenv("MANAGER_SERVICE_FEEDBACK_HOST_ALIAS", "fb")
    monkeypatch.setenv("MANAGER_DB_POSTGRES_HOST_IP", "10.0.0.1")
    monkeypatch.setenv("MANAGER_SANDBOX_SERVICES", "true")
    monkeypatch.setenv("MANAGER_DB_EMBEDDED", "true")
    settings = load_settings()
    assert settings.service("feedback").host is None
    assert settings.uses_embedded_database
