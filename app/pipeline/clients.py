"""Clients of the three audio services, calling them as docs/audio-services.md describes."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from app.config import DownstreamService, Settings, StageName
from app.metrics import Metrics
from app.pipeline.errors import (
    PermanentFailure,
    failure_from_response,
    failure_from_transport,
)
from app.pipeline.storable import storable_json, storable_text


@dataclass(frozen=True)
class Assessment:
    """What the feedback stage answers."""

    accuracy: float
    mistakes: list[Any]


class ServiceClient:
    """One shared `httpx.AsyncClient` per service, with a cap on calls in flight."""

    stage: StageName

    def __init__(self, config: DownstreamService, base_url: str, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=config.timeout,
            # Enough pooled connections for the calls we allow in flight, no more.
            limits=httpx.Limits(
                max_connections=config.concurrency, max_keepalive_connections=config.concurrency
            ),
        )
        self._in_flight = asyncio.Semaphore(config.concurrency)

    async def post(self, **kwargs: Any) -> httpx.Response:
        """POST / and return a 2xx response, or raise a classified `StageFailure`."""
        async with self._in_flight:
            started = time.perf_counter()
            try:
                response = await self.http.post("/", **kwargs)
            except httpx.TransportError as error:
                outcome = (
                    "timeout" if isinstance(error, httpx.TimeoutException) else "connection_error"
                )
                self._observe(started, outcome)
                raise failure_from_transport(error, self.config.timeout) from error
        self._observe(started, f"{response.status_code // 100}xx")
        if not response.is_success:
            raise failure_from_response(response)
        return response

    def _observe(self, started: float, outcome: str) -> None:
        self.metrics.stage_call_duration.labels(self.stage).observe(time.perf_counter() - started)
        self.metrics.downstream_calls.labels(self.stage, outcome).inc()

    async def aclose(self) -> None:
        await self.http.aclose()


class PreprocessingClient(ServiceClient):
    stage = "preprocessing"

    async def preprocess(self, pcm: bytes) -> bytes:
        """Raw PCM (s16le, stereo, 44.1 kHz) → a clean 16 kHz mono WAV."""
        response = await self.post(files={"file": ("audio.pcm", pcm, "application/octet-stream")})
        wav = response.content
        if not (wav.startswith(b"RIFF") and wav[8:12] == b"WAVE"):
            raise PermanentFailure("invalid response: the body is not a WAV file")
        return wav


class TranscribingClient(ServiceClient):
    stage = "transcribing"

    async def transcribe(self, wav: bytes) -> str:
        """A WAV → IPA phonemes separated by spaces."""
        response = await self.post(
            data={"lang": "english"}, files={"file": ("audio.wav", wav, "audio/wav")}
        )
        body = _json_object(response)
        transcription = body.get("transcription")
        if not isinstance(transcription, str):
            raise PermanentFailure("invalid response: no 'transcription' string")
        return storable_text(transcription)


class FeedbackClient(ServiceClient):
    stage = "feedback"

    async def assess(self, text_id: uuid.UUID, transcription: str) -> Assessment:
        """Align the transcription with the text's reference phonemes."""
        response = await self.post(json={"text_id": str(text_id), "actual_result": transcription})
        body = _json_object(response)
        accuracy = body.get("accuracy")
        mistakes = body.get("mistakes")
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
            raise PermanentFailure("invalid response: no numeric 'accuracy'")
        if not math.isfinite(accuracy) or not 0 <= accuracy <= 100:
            raise PermanentFailure(f"invalid response: accuracy {accuracy} is outside 0–100")
        if not isinstance(mistakes, list):
            raise PermanentFailure("invalid response: no 'mistakes' list")
        return Assessment(accuracy=float(accuracy), mistakes=storable_json(mistakes))


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise PermanentFailure("invalid response: the body is not JSON") from None
    if not isinstance(body, dict):
        raise PermanentFailure("invalid response: the body is not a JSON object")
    return body


C = TypeVar("C", bound=ServiceClient)


@dataclass(frozen=True)
class StageClients:
    preprocessing: PreprocessingClient
    transcribing: TranscribingClient
    feedback: FeedbackClient

    def all(self) -> tuple[ServiceClient, ...]:
        return (self.preprocessing, self.transcribing, self.feedback)

    async def aclose(self) -> None:
        for client in self.all():
            await client.aclose()


def create_stage_clients(
    settings: Settings, metrics: Metrics, base_urls: dict[StageName, str]
) -> StageClients:
    """One client per stage, calling `base_urls[stage]` (a sandbox's, or the configured one)."""

    def client(cls: type[C], stage: StageName) -> C:
        return cls(settings.service(stage), base_urls[stage], metrics)

    return StageClients(
        preprocessing=client(PreprocessingClient, "preprocessing"),
        transcribing=client(TranscribingClient, "transcribing"),
        feedback=client(FeedbackClient, "feedback"),
    )
