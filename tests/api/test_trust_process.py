"""The trust boundary of the real process (`python start.py` under uvicorn)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.fakes import FakeServices
from tests.postgres import SessionPostgres
from tests.process import ServiceProcess

USER = str(uuid.uuid4())


@pytest.fixture
def service(
    postgres: SessionPostgres,
    database_url: URL,
    fakes: FakeServices,
    tmp_path: Path,
    clean_database: None,
) -> Iterator[ServiceProcess]:
    environment = {
        **postgres.environment(database_url),
        **fakes.environment(),
        "MANAGER_DEBUG_MODE": "false",
        "MANAGER_WORKER_CONCURRENCY": "0",
        # The test calls from 127.0.0.1: outside this list, so it is an outsider.
        "MANAGER_TRUSTED_CLIENTS": "10.0.0.0/8",
    }
    with ServiceProcess(environment, tmp_path / "service.log") as running:
        yield running


def test_x_forwarded_for_from_loopback_names_no_trusted_address(
    service: ServiceProcess,
) -> None:
    """uvicorn alone would take 10.1.1.1 from a peer on 127.0.0.1 and trust it."""
    response = httpx.get(
        f"{service.base_url}/tasks",
        headers={"X-User-Id": USER, "X-Forwarded-For": "10.1.1.1"},
        timeout=30,
    )
    assert response.status_code == 403


def test_an_outsider_gets_403_before_sending_its_24_mib_body(service: ServiceProcess) -> None:
    head = (
        "POST / HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{service.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {24 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as connection:
        connection.sendall(head.encode())  # the headers only: not a byte of the body
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ")
