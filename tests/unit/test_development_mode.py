"""No sandbox unless asked for: made-up assessments and an embedded database are opt-ins.

A process started without explicit development settings must never serve a sandbox
stage, start an embedded PostgreSQL or mount the demo page; a forgotten host is refused
at start-up in one line that names it, in debug mode too.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.config import STAGES, ConfigurationError, Settings, load_settings
from app.main import create_app
from tests.environment import clear_manager_environment
from tests.process import refused_start


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_manager_environment(monkeypatch, tmp_path)


def production_variables(*, without: str | None = None) -> dict[str, str]:
    """A complete production configuration, less the variable `without`."""
    variables = {
        "MANAGER_DB_POSTGRES_HOST": "db",
        "MANAGER_DB_POSTGRES_PASSWORD": "unused",
    }
    for stage in STAGES:
        variables[f"MANAGER_SERVICE_{stage.upper()}_HOST"] = f"{stage}.internal"
        variables[f"MANAGER_SERVICE_{stage.upper()}_PORT"] = "8065"
    variables.pop(without or "", None)
    return variables


def set_all(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


async def demo_mounted(settings: Settings) -> bool:
    app = create_app(settings)  # the page needs no lifespan: nothing connects
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://task-manager") as client:
        answer = await client.get("/demo")
    return answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")


def test_the_defaults_are_production() -> None:
    settings = Settings(_env_file=None)
    assert settings.debug_mode is False
    assert settings.sandbox_services is False
    assert settings.db_embedded is False
    assert not settings.uses_embedded_database
    assert settings.sandboxed_stages() == []
    assert not settings.serves_demo
    assert settings.logs_as_json


@pytest.mark.parametrize("debug_mode", [None, "True", "False"])
def test_a_missing_service_host_is_refused_in_every_mode(
    monkeypatch: pytest.MonkeyPatch, debug_mode: str | None
) -> None:
    set_all(monkeypatch, production_variables(without="MANAGER_SERVICE_TRANSCRIBING_HOST"))
    if debug_mode is not None:
        monkeypatch.setenv("MANAGER_DEBUG_MODE", debug_mode)
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert "\n" not in str(error.value)
    assert "MANAGER_SERVICE_TRANSCRIBING_HOST" in str(error.value)
    assert "PREPROCESSING" not in str(error.value)
    assert "FEEDBACK" not in str(error.value)


@pytest.mark.parametrize("debug_mode", [None, "True"])
def test_a_missing_database_host_is_refused_without_the_embedded_opt_in(
    monkeypatch: pytest.MonkeyPatch, debug_mode: str | None
) -> None:
    set_all(monkeypatch, production_variables(without="MANAGER_DB_POSTGRES_HOST"))
    monkeypatch.delenv("MANAGER_DB_POSTGRES_PASSWORD")
    if debug_mode is not None:
        monkeypatch.setenv("MANAGER_DEBUG_MODE", debug_mode)
    with pytest.raises(ConfigurationError, match="MANAGER_DB_POSTGRES_HOST"):
        load_settings()


def test_ilps_development_means_the_real_services(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, production_variables())
    monkeypatch.setenv("MANAGER_DEBUG_MODE", "True")
    settings = load_settings()
    assert settings.sandboxed_stages() == []
    assert not settings.uses_embedded_database
    assert not settings.logs_as_json  # debug mode still means readable logs


def test_the_sandbox_serves_only_the_stages_without_a_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_all(monkeypatch, production_variables(without="MANAGER_SERVICE_FEEDBACK_HOST"))
    monkeypatch.setenv("MANAGER_SANDBOX_SERVICES", "true")
    settings = load_settings()
    assert settings.sandboxed_stages() == ["feedback"]
    assert not settings.debug_mode


def test_a_database_host_wins_over_the_embedded_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, production_variables())
    monkeypatch.setenv("MANAGER_DB_EMBEDDED", "true")
    assert not load_settings().uses_embedded_database


def test_the_embedded_opt_in_stands_in_for_the_database_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_all(monkeypatch, production_variables(without="MANAGER_DB_POSTGRES_HOST"))
    monkeypatch.delenv("MANAGER_DB_POSTGRES_PASSWORD")
    monkeypatch.setenv("MANAGER_DB_EMBEDDED", "true")
    settings = load_settings()
    assert settings.uses_embedded_database
    assert settings.sandboxed_stages() == []


@pytest.mark.parametrize(
    ("options", "mounted"),
    [
        ({}, False),
        ({"debug_mode": True}, True),
        ({"sandbox_services": True}, True),
    ],
)
async def test_the_demo_page_is_a_development_tool(options: dict[str, bool], mounted: bool) -> None:
    settings = Settings(_env_file=None, **options)  # type: ignore[arg-type]
    assert settings.serves_demo is mounted
    assert await demo_mounted(settings) is mounted


@pytest.mark.parametrize("debug_mode", [None, "True"])
def test_start_py_refuses_a_missing_host_in_one_line(
    tmp_path: Path, debug_mode: str | None
) -> None:
    environment = {"PATH": "/usr/bin:/bin"}
    environment |= production_variables(without="MANAGER_SERVICE_FEEDBACK_HOST")
    if debug_mode is not None:
        environment["MANAGER_DEBUG_MODE"] = debug_mode
    assert "MANAGER_SERVICE_FEEDBACK_HOST" in refused_start(environment, tmp_path)
