"""Configuration: the operators' variables, and one-line refusals when something is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigurationError, load_settings
from tests.environment import clear_manager_environment
from tests.process import refused_start


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_manager_environment(monkeypatch, tmp_path)


def develop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The development opt-ins, so settings load without any host."""
    monkeypatch.setenv("MANAGER_SANDBOX_SERVICES", "true")
    monkeypatch.setenv("MANAGER_DB_EMBEDDED", "true")


def test_contract_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    develop(monkeypatch)
    settings = load_settings()
    assert settings.debug_mode is False
    assert settings.service_name == "ilps-service-task-manager"
    assert settings.db_postgres_user == "service_task_manager"
    assert settings.db_postgres_name == "tasks"
    assert settings.db_postgres_port == 5432
    assert settings.port == 8064
    assert settings.max_upload_mb == 25
    assert settings.uses_embedded_database


def test_service_variables_are_read_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    develop(monkeypatch)
    monkeypatch.setenv("MANAGER_SERVICE_TRANSCRIBING_HOST", "asr")
    monkeypatch.setenv("MANAGER_SERVICE_TRANSCRIBING_PORT", "8066")
    monkeypatch.setenv("MANAGER_SERVICE_TRANSCRIBING_PROTOCOL", "https")
    monkeypatch.setenv("MANAGER_SERVICE_TRANSCRIBING_TIMEOUT", "12.5")
    settings = load_settings()
    transcribing = settings.service("transcribing")
    assert transcribing.base_url == "https://asr:8066"
    assert transcribing.timeout == 12.5
    assert transcribing.concurrency == 1  # the stage's own default survives a partial override
    assert settings.service("feedback").host is None


def test_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    develop(monkeypatch)
    (tmp_path / ".env").write_text(
        "MANAGER_SERVICE_NAME=from-dotenv\nMANAGER_DB_POSTGRES_PORT=6543\n"
    )
    settings = load_settings()
    assert settings.service_name == "from-dotenv"
    assert settings.db_postgres_port == 6543


def test_without_opt_ins_every_missing_variable_is_named() -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    message = str(error.value)
    assert "\n" not in message
    for name in (
        "MANAGER_DB_POSTGRES_HOST",
        "MANAGER_SERVICE_PREPROCESSING_HOST",
        "MANAGER_SERVICE_TRANSCRIBING_PORT",
        "MANAGER_SERVICE_FEEDBACK_HOST",
    ):
        assert name in message


def test_a_host_without_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANAGER_DB_POSTGRES_HOST", "db")
    with pytest.raises(ConfigurationError, match="MANAGER_DB_POSTGRES_PASSWORD"):
        load_settings()


def test_an_invalid_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANAGER_DB_POSTGRES_PORT", "not-a-port")
    with pytest.raises(ConfigurationError, match="MANAGER_DB_POSTGRES_PORT"):
        load_settings()


def test_start_py_exits_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    environment = {"PATH": "/usr/bin:/bin", "MANAGER_DEBUG_MODE": "false"}
    assert "MANAGER_DB_POSTGRES_HOST" in refused_start(environment, tmp_path)


def test_a_backoff_base_above_its_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    develop(monkeypatch)
    monkeypatch.setenv("MANAGER_PIPELINE_BACKOFF_BASE_SECONDS", "90")
    monkeypatch.setenv("MANAGER_PIPELINE_BACKOFF_MAX_SECONDS", "60")
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    message = str(error.value)
    assert "\n" not in message
    assert "MANAGER_PIPELINE_BACKOFF_BASE_SECONDS" in message
    assert "MANAGER_PIPELINE_BACKOFF_MAX_SECONDS" in message


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
        ("whsec_not*base64!", "is not base64"),
        ("whsec_c2hvcnQ=", "too short"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw " * 3, "one secret, or two"),
    ],
)
def test_a_malformed_webhook_secret_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, secret: str, problem: str
) -> None:
    monkeypatch.setenv("MANAGER_WEBHOOK_SECRET", secret)
    with pytest.raises(ConfigurationError, match=problem) as error:
        load_settings()
    assert "\n" not in str(error.value)
    assert "MANAGER_WEBHOOK_SECRET" in str(error.value)
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in str(error.value)  # never the secret


def test_two_webhook_secrets_and_allowed_hosts_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    develop(monkeypatch)
    monkeypatch.setenv(
        "MANAGER_WEBHOOK_SECRET",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24h",
    )
    monkeypatch.setenv("MANAGER_WEBHOOK_ALLOWED_HOSTS", "LMS-Bridge., 10.0.0.7")
    settings = load_settings()
    assert [len(key) for key in settings.webhook_keys] == [24, 27]
    assert settings.webhook_allowed_hosts == ["lms-bridge", "10.0.0.7"]


def test_allowed_hosts_take_an_optional_port(monkeypatch: pytest.MonkeyPatch) -> None:
    develop(monkeypatch)
    monkeypatch.setenv("MANAGER_WEBHOOK_ALLOWED_HOSTS", "lms-bridge:8443, [fd00::7]:80, fd00::8")
    assert load_settings().webhook_allowed_hosts == ["lms-bridge:8443", "[fd00::7]:80", "fd00::8"]


@pytest.mark.parametrize("entry", ["lms-bridge:", "lms-bridge:http", "lms-bridge:70000"])
def test_a_malformed_allowed_host_is_named(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    monkeypatch.setenv("MANAGER_WEBHOOK_ALLOWED_HOSTS", f"10.0.0.7, {entry}")
    with pytest.raises(ConfigurationError, match="MANAGER_WEBHOOK_ALLOWED_HOSTS"):
        load_settings()


def test_a_host_list_takes_one_port_or_one_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.db.sessions import SessionOptions
    from app.db.url import asyncpg_dsn, configured_database_url

    develop(monkeypatch)
    monkeypatch.setenv("MANAGER_DB_POSTGRES_HOST", "db1,db2")
    monkeypatch.setenv("MANAGER_DB_POSTGRES_PASSWORD", "pw")
    monkeypatch.setenv("MANAGER_DB_POSTGRES_PORT", "5433,5434")
    settings = load_settings()
    assert settings.database_hosts() == [("db1", 5433), ("db2", 5434)]
    assert "host=db1%3A5433%2Cdb2%3A5434" in asyncpg_dsn(configured_database_url(settings))
    assert SessionOptions.from_settings(settings).connect_args("x")["target_session_attrs"] == (
        "read-write"
    )
    monkeypatch.setenv("MANAGER_DB_POSTGRES_PORT", "6000")
    assert load_settings().database_hosts() == [("db1", 6000), ("db2", 6000)]
    monkeypatch.setenv("MANAGER_DB_POSTGRES_PORT", "1,2,3")
    with pytest.raises(ConfigurationError, match="one per host"):
        load_settings().database_hosts()


def test_a_single_host_connects_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.db.sessions import SessionOptions
    from app.db.url import asyncpg_dsn, configured_database_url

    develop(monkeypatch)
    monkeypatch.setenv("MANAGER_DB_POSTGRES_HOST", "db")
    monkeypatch.setenv("MANAGER_DB_POSTGRES_PASSWORD", "pw")
    settings = load_settings()
    assert asyncpg_dsn(configured_database_url(settings)) == (
        "postgresql://service_task_manager:pw@db:5432/tasks"
    )
    assert "target_session_attrs" not in SessionOptions.from_settings(settings).connect_args("x")
