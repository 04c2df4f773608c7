"""The sandboxes served over real HTTP: in the caller's event loop, and as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.sandbox import STAGES, Stage
from app.sandbox.catalogue import QUICK_BROWN_FOX
from app.sandbox.embedded import serve_sandbox
from tests.waiting import eventually

from .test_transcribing import silence_wav

ROOT = Path(__file__).resolve().parents[2]


async def wait_until_healthy(client: httpx.AsyncClient, seconds: float = 30.0) -> dict[str, object]:
    """Poll ``GET /health`` until it answers 200 (and a model, if any, is loaded)."""

    async def healthy_body() -> dict[str, object] | None:
        try:
            response = await client.get("/health")
        except httpx.TransportError:
            return None  # not listening yet
        body: dict[str, object] = response.json()
        if response.status_code == 200 and body.get("models", {}) in ({}, {"english": "loaded"}):
            return body
        return None

    return await eventually(
        healthy_body, within=seconds, interval=0.1, message="the service to become healthy"
    )


@pytest.mark.parametrize("stage", STAGES)
async def test_each_stage_serves_http_on_loopback(stage: Stage) -> None:
    async with serve_sandbox(stage) as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as client:
            body = await wait_until_healthy(client)
            assert body["service"] == f"sandbox-{stage}"


async def test_the_pipeline_over_http() -> None:
    async with (
        serve_sandbox("preprocessing") as preprocessing_url,
        serve_sandbox("transcribing") as transcribing_url,
        serve_sandbox("feedback") as feedback_url,
        httpx.AsyncClient(timeout=30) as client,
    ):
        wav = await client.post(
            f"{preprocessing_url}/",
            files={"file": ("audio.pcm", bytes(44_100 * 4), "application/octet-stream")},
        )
        assert wav.status_code == 200
        async with httpx.AsyncClient(base_url=transcribing_url) as transcriber:
            await wait_until_healthy(transcriber)
        result = await client.post(
            f"{transcribing_url}/",
            data={"lang": "english"},
            files={"file": ("audio.wav", wav.content, "audio/wav")},
        )
        assert result.status_code == 200
        assessed = await client.post(
            f"{feedback_url}/",
            json={
                "text_id": str(QUICK_BROWN_FOX.id),
                "actual_result": result.json()["transcription"],
            },
        )
        assert assessed.status_code == 200
        assert set(assessed.json()) == {"accuracy", "mistakes"}


async def test_a_taken_port_is_an_error_for_the_caller() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            async with serve_sandbox("feedback", port=port):
                pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_command_line_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.sandbox", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "preprocessing" in result.stdout


@pytest.mark.slow
async def test_command_line_serves_a_stage() -> None:
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.sandbox", "transcribing", "--port", str(port),
        cwd=ROOT, env=environment,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            body = await wait_until_healthy(client, seconds=60)
            assert body["service"] == "sandbox-transcribing"
            response = await client.post(
                "/", data={"lang": "english"}, files={"file": ("a.wav", silence_wav(), "audio/wav")}
            )
            assert response.status_code == 200
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
        assert await asyncio.wait_for(process.wait(), timeout=30) in (0, -signal.SIGTERM)
