"""Receiver secrets: one per origin, derived from the master secret, printed for operators."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.webhooks.secrets import main, receiver_keys, receiver_origin, secret_text
from app.webhooks.signing import webhook_headers
from tests.webhooks.receiver import OTHER_SECRET, SECRET, derived_secret

MASTER = [bytes(range(32))]
BODY = b'{"type":"task.completed","data":{}}'


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://lms.example.org", "https://lms.example.org:443"),
        ("https://LMS.Example.org./hooks/a?x=1", "https://lms.example.org:443"),
        ("https://lms.example.org:443/b", "https://lms.example.org:443"),
        ("http://lms-bridge:8080/h", "http://lms-bridge:8080"),
        ("http://10.0.0.7/h", "http://10.0.0.7:80"),
        ("https://[2001:db8::1]:8443/h", "https://[2001:db8::1]:8443"),
        ("https://bücher.example/h", "https://xn--bcher-kva.example:443"),
    ],
)
def test_a_receiver_is_its_origin(url: str, origin: str) -> None:
    assert receiver_origin(url) == origin


@pytest.mark.parametrize("url", ["lms.example.org", "ftp://lms.example.org", "https://"])
def test_what_is_not_an_http_url_has_no_origin(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        receiver_origin(url)


def sign(url: str, masters: list[bytes]) -> dict[str, str]:
    return webhook_headers(receiver_keys(masters, url), "msg_1", int(time.time()), BODY)


def test_each_origin_verifies_its_own_deliveries_only() -> None:
    a, b = "https://a.example.org/hook", "https://b.example.org/hook"
    [key_a], [key_b] = receiver_keys(MASTER, a), receiver_keys(MASTER, b)
    assert key_a != key_b != MASTER[0]
    assert receiver_keys(MASTER, "https://a.example.org:443/other") == [key_a]
    assert receiver_keys(MASTER, "https://a.example.org:8443/hook") != [key_a]
    assert receiver_keys(MASTER, "http://a.example.org/hook") != [key_a]
    verifier_a = Webhook(secret_text(key_a))
    verifier_a.verify(BODY, sign(a, MASTER))
    with pytest.raises(WebhookVerificationError):
        verifier_a.verify(BODY, sign(b, MASTER))


def test_while_rotating_each_derived_secret_verifies() -> None:
    url = "https://lms.example.org/hook"
    old, new = [bytes(range(32))], [bytes(range(1, 33))]
    headers = sign(url, new + old)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for master in (old, new):
        [key] = receiver_keys(master, url)
        Webhook(secret_text(key)).verify(BODY, headers)


def test_the_command_line_prints_each_receivers_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("MANAGER_WEBHOOK_SECRET", f"{SECRET} {OTHER_SECRET}")
    assert main(["https://lms.example.org/hooks", "http://lms-bridge:8080"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "https://lms.example.org:443 "
        + derived_secret(SECRET, "https://lms.example.org")
        + " "
        + derived_secret(OTHER_SECRET, "https://lms.example.org"),
        "http://lms-bridge:8080 "
        + derived_secret(SECRET, "http://lms-bridge:8080")
        + " "
        + derived_secret(OTHER_SECRET, "http://lms-bridge:8080"),
    ]


def test_the_command_line_needs_a_secret_and_a_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MANAGER_WEBHOOK_SECRET", raising=False)
    assert main(["https://lms.example.org"]) == 1
    monkeypatch.setenv("MANAGER_WEBHOOK_SECRET", "not-a-secret")
    assert main(["https://lms.example.org"]) == 1
    monkeypatch.setenv("MANAGER_WEBHOOK_SECRET", SECRET)
    assert main([]) == 2
    assert main(["ftp://lms.example.org"]) == 2


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.webhooks.secrets", "https://lms.example.org"],
        env={"MANAGER_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(Path.cwd())},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [
        "https://lms.example.org:443",
        derived_secret(SECRET, "https://lms.example.org"),
    ]
