"""Clients of the three audio services, calling them as docs/audio-services.md describes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
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


class _Body(httpx.AsyncByteStream):
    """A request body sent as the given pieces, each as it is: nothing joined or copied.

    A piece that is `bytes` goes through h11 and into the socket without a copy (h11
    joins the one piece of each write, which for a single `bytes` returns it as is).
    """

    def __init__(self, parts: tuple[bytes, ...]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            if part:
                yield part


class ServiceClient:
    """One shared `httpx.AsyncClient` per service, with a cap on calls in flight.

    Requests are built once per call from parts prepared once per client (URL, headers
    the client would add, the timeout, the metrics' label children) and handed to the
    client's transport (connection pool) directly: httpx's per-request merging of client
    defaults, its multipart encoder, its auth, redirect and cookie handling (none of which
    a stage call uses) do not run. The bytes on the wire are the ones httpx would send
    (same headers, same multipart layout, a fresh random boundary each time).
    """

    stage: StageName

    def __init__(
        self,
        config: DownstreamService,
        base_url: str,
        metrics: Metrics,
        tls: ssl.SSLContext,
    ) -> None:
        self.config = config
        # Enough pooled connections for the calls we allow in flight, no more.
        self._transport = httpx.AsyncHTTPTransport(
            verify=tls,
            limits=httpx.Limits(
                max_connections=config.concurrency, max_keepalive_connections=config.concurrency
            ),
        )
        # For the occasional request (health probes, the demo's text list); stage calls go
        # to its transport directly.
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=config.timeout, transport=self._transport
        )
        self._url = self.http.base_url.join("/")
        self._headers = [
            ("Host", self._url.netloc.decode("ascii")),
            *self.http.headers.multi_items(),
        ]
        self._timeout = {"timeout": self.http.timeout.as_dict()}
        self._in_flight = asyncio.Semaphore(config.concurrency)
        self._duration = metrics.stage_call_duration.labels(self.stage)
        self._calls = metrics.downstream_calls
        self._outcomes: dict[str, Any] = {}

    async def post(self, content_type: str, parts: tuple[bytes, ...]) -> httpx.Response:
        """POST / with the body `parts`; return a 2xx response or raise a `StageFailure`."""
        headers = [
            *self._headers,
            ("Content-Length", str(sum(len(part) for part in parts))),
            ("Content-Type", content_type),
        ]
        request = httpx.Request(
            "POST", self._url, headers=headers, stream=_Body(parts), extensions=self._timeout
        )
        async with self._in_flight:
            started = time.perf_counter()
            try:
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.TransportError as error:
                outcome = (
                    "timeout" if isinstance(error, httpx.TimeoutException) else "connection_error"
                )
                self._observe(started, outcome)
                raise failure_from_transport(error, self.config.timeout) from error
        self._observe(started, _STATUS_CLASSES.get(response.status_code // 100, "other"))
        if not response.is_success:
            raise failure_from_response(response)
        return response

    def _observe(self, started: float, outcome: str) -> None:
        self._duration.observe(time.perf_counter() - started)
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self._calls.labels(self.stage, outcome)
        counter.inc()

    async def aclose(self) -> None:
        await self.http.aclose()


# Each piece of a body is one write through httpcore (with its own timeout scope) and one
# send(2); copying a small file once into a single piece costs less than two more writes.
# A large one is sent as it is: copying it would cost more than the writes it saves.
JOIN_BODIES_UP_TO = 256 * 1024

_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


def multipart(
    fields: tuple[tuple[str, str], ...], *, filename: str, content_type: str, content: bytes
) -> tuple[str, tuple[bytes, ...]]:
    """`multipart/form-data` as httpx lays it out (the fields, then the part `file`).

    Returns the Content-Type and the body: one piece up to `JOIN_BODIES_UP_TO` bytes of
    file, else three: the framing before the file, the file's bytes (the caller's object,
    not copied), the closing framing.
    """
    boundary = os.urandom(16).hex()
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n"
    content_type = f"multipart/form-data; boundary={boundary}"
    if len(content) <= JOIN_BODIES_UP_TO:
        return content_type, (b"".join((head.encode(), content, tail.encode())),)
    return content_type, (head.encode(), content, tail.encode())


class PreprocessingClient(ServiceClient):
    stage = "preprocessing"

    async def preprocess(self, pcm: bytes) -> bytes:
        """Raw PCM (s16le, stereo, 44.1 kHz) → a clean 16 kHz mono WAV."""
        response = await self.post(
            *multipart(
                (), filename="audio.pcm", content_type="application/octet-stream", content=pcm
            )
        )
        wav = response.content
        if not (wav.startswith(b"RIFF") and wav[8:12] == b"WAVE"):
            raise PermanentFailure("invalid response: the body is not a WAV file")
        return wav


class TranscribingClient(ServiceClient):
    stage = "transcribing"

    async def transcribe(self, wav: bytes) -> str:
        """A WAV → IPA phonemes separated by spaces."""
        response = await self.post(
            *multipart(
                (("lang", "english"),), filename="audio.wav", content_type="audio/wav", content=wav
            )
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
        # Encoded as httpx encodes `json=`: compact, UTF-8, no NaN.
        body = json.dumps(
            {"text_id": str(text_id), "actual_result": transcription},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )
        response = await self.post("application/json", (body.encode(),))
        answer = _json_object(response)
        accuracy = answer.get("accuracy")
        mistakes = answer.get("mistakes")
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
    settings: Settings,
    metrics: Metrics,
    base_urls: dict[StageName, str],
    tls: ssl.SSLContext,
) -> StageClients:
    """One client per stage, calling `base_urls[stage]` (a sandbox's, or the configured one).

    `tls` is the process's one TLS context: building one loads the CA bundle, and httpx
    builds one per transport unless it is given one.
    """

    def client(cls: type[C], stage: StageName) -> C:
        return cls(settings.service(stage), base_urls[stage], metrics, tls)

    return StageClients(
        preprocessing=client(PreprocessingClient, "preprocessing"),
        transcribing=client(TranscribingClient, "transcribing"),
        feedback=client(FeedbackClient, "feedback"),
    )
