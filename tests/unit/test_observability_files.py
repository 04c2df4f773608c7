"""deploy/prometheus and deploy/grafana: alert rules that promtool accepts and whose unit
tests pass, every alert with what an operator needs, a dashboard Prometheus can run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "ilps-task-manager.json"
PROMTOOL = shutil.which("promtool")

requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)
# Grafana's variables, replaced by values Prometheus parses.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def as_prometheus(expression: str) -> str:
    return re.sub(r"\$\w+", lambda m: GRAFANA_VARIABLES[m.group(0)], expression)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


@requires_promtool
def test_promtool_accepts_the_rules_and_the_scrape_example() -> None:
    rules = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


@requires_promtool
def test_each_alert_fires_and_stays_silent_in_the_rule_tests() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{rule['alert']} never fires"
        assert any(not check["exp_alerts"] for check in mine), f"{rule['alert']} never silent"

    completed = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert completed.returncode == 0, completed.stdout + completed.stderr


@requires_promtool
def test_prometheus_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool parses a rules file's expressions: each query becomes a recording rule.
    rules = [
        {"record": f"dashboard:query_{index}", "expr": as_prometheus(expression)}
        for index, expression in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    completed = promtool("check", "rules", str(path))

    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_alert_has_a_duration_a_severity_and_a_text() -> None:
    rules = alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_dashboard_reads_prometheus_through_its_data_source_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
