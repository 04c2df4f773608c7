"""SIGTERM: claiming stops at the signal, and the process exits within the grace period."""

from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes import FakeServices, new_marker
from tests.pipeline.test_processes import ProcessFactory, service_process, upload
from tests.waiting import eventually

pytestmark = pytest.mark.slow

__all__ = ["service_process"]  # the fixture, shared with the other process tests

GRACE = 3
# The first transcription hangs this long: far past the grace period, so an exit before it
# answers shows the process gave up at the grace period's end rather than waiting.
HANG = 30
# A signal reaches the workers within milliseconds; this only absorbs a loaded machine.
SIGNAL_LATENCY = 0.5


def stalled_upload(port: int) -> socket.socket:
    """An upload whose body never finishes arriving: uvicorn drains it until its timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /tasks HTTP/1.1\r\nHost: task-manager\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: 100000\r\nX-User-Id: 3f0c2a51-3c3f-4c4e-9a57-1d3d7b0f0a11\r\n\r\n"
        b'--xyz\r\nContent-Disposition: form-data; name="title"\r\n\r\nslow'
    )
    return sock


async def test_sigterm_stops_claiming_at_once_and_exits_within_the_grace_period(
    service_process: ProcessFactory, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.transcribing.hang_seconds = HANG
    # The first transcription hangs past the grace period; every later one fails and is
    # retried a little later, so a worker that still claims after the signal calls again.
    fakes.transcribing.script.extend(["hang", *[503] * 500])
    environment = {
        "MANAGER_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "MANAGER_SERVICE_TRANSCRIBING_TIMEOUT": "60",
        "MANAGER_SERVICE_TRANSCRIBING_CONCURRENCY": "4",
        "MANAGER_PIPELINE_MAX_ATTEMPTS": "1000",
        "MANAGER_PIPELINE_BACKOFF_BASE_SECONDS": "0.2",
        "MANAGER_PIPELINE_BACKOFF_MAX_SECONDS": "0.2",
    }
    hanging, flaky = new_marker(), new_marker()
    with service_process("draining", **environment) as service:
        await upload(service.base_url, hanging)
        await eventually(
            lambda: bool(fakes.transcribing.calls_for(hanging)),
            message="the hanging transcription to start",
        )
        await upload(service.base_url, flaky)
        await eventually(
            lambda: len(fakes.transcribing.calls_for(flaky)) >= 2,
            message="the flaky task to be retried",
        )
        request = stalled_upload(service.port)
        try:
            signalled = time.monotonic()
            service.terminate(within=HANG / 2)
        finally:
            request.close()

    [hung] = fakes.transcribing.calls_for(hanging)
    assert hung.outcome == "", "the process waited for the hanging transcription"
    late = [
        call.started - signalled
        for call in fakes.transcribing.calls
        if call.started > signalled + SIGNAL_LATENCY
    ]
    assert late == [], f"stage calls started after the signal, at +{late}s"
    async with engine.connect() as connection:
        held = await connection.scalar(
            text("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL")
        )
    assert held == 0, "leases must be handed back at shutdown"
    fakes.transcribing.script.clear()
