"""The tracing switch: the standard OTEL_* variables, and nothing of OpenTelemetry loaded
while it is off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.tracing import tracing_requested
from tests.unit.test_startup_imports import PROBE, ROOT, _production_environment


@pytest.mark.parametrize(
    ("environment", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "manager"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_the_switch_follows_the_standard_variables(environment: dict[str, str], on: bool) -> None:
    assert tracing_requested(environment) is on


def _modules_loaded(**otel: str) -> list[str]:
    environment = {k: v for k, v in _production_environment().items() if not k.startswith("OTEL_")}
    environment.update(otel)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()


# FastAPI itself imports the OpenTelemetry *API* (its built-in telemetry, a no-op until a
# global provider is set, which this service never does); the rest is this service's.
TRACING_ONLY = (
    "opentelemetry.sdk",
    "opentelemetry.instrumentation",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "google.protobuf",
    "app.tracing.otel",
)


def test_with_tracing_off_no_sdk_instrumentation_or_exporter_is_loaded() -> None:
    modules = _modules_loaded(OTEL_SERVICE_NAME="manager", OTEL_TRACES_EXPORTER="none")
    assert "app.main" in modules
    assert [name for name in modules if name.startswith(TRACING_ONLY)] == []


def test_with_tracing_on_the_sdk_is_loaded() -> None:
    # Building the app exports nothing yet: the exporter is made when the lifespan starts.
    modules = _modules_loaded(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert "app.tracing.otel" in modules
    assert "opentelemetry.sdk.trace" in modules
