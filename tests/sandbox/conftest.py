"""Fixtures of the sandbox tests: the three services in-process, and synthesised speech."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from app.sandbox import create_sandbox_app
from app.sandbox.catalogue import PLEASE_CALL_STELLA
from app.sandbox.transcribing import wait_for_models

from .speech import TEST_VOICE, speak_pcm, speech_available

__all__ = ["TEST_VOICE"]


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose lifespan runs meanwhile (ASGITransport does not run it)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        ) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def preprocessing() -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_sandbox_app("preprocessing")) as client:
        yield client


@pytest.fixture(scope="module")
async def transcribing() -> AsyncIterator[httpx.AsyncClient]:
    app = create_sandbox_app("transcribing")
    async with serving(app) as client:
        await wait_for_models(app)
        yield client


@pytest.fixture(scope="module")
async def feedback() -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_sandbox_app("feedback")) as client:
        yield client


@pytest.fixture(scope="session")
def speech() -> None:
    """Skip the test when espeak-ng cannot be loaded here."""
    reason = speech_available()
    if reason is not None:
        pytest.skip(f"no speech synthesis: {reason}")


@pytest.fixture(scope="session")
def stella_pcm(speech: None) -> bytes:
    """ "Please call Stella" as the mobile app uploads it (PCM s16le stereo 44.1 kHz)."""
    return speak_pcm(PLEASE_CALL_STELLA.text, voice=TEST_VOICE)
