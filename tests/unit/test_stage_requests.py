"""The stage requests the clients build by hand are the ones httpx would build.

The clients skip httpx's request builder (see `ServiceClient`); the audio services'
contract (docs/audio-services.md) must not notice: same headers, same multipart layout.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from app.config import DownstreamService
from app.metrics import create_metrics
from app.pipeline.clients import (
    JOIN_BODIES_UP_TO,
    FeedbackClient,
    PreprocessingClient,
    ServiceClient,
    TranscribingClient,
)

# The process shares one TLS context between its clients (the calls here are plain http).
TLS = httpx.create_ssl_context()

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4


class Captured:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []


def answering(client: ServiceClient, body: bytes, captured: Captured) -> None:
    """Route `client`'s calls to an in-process handler that records each request."""

    async def handle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        captured.requests.append(request)
        return httpx.Response(200, content=body)

    transport = httpx.MockTransport(handle)
    client._transport = transport  # type: ignore[assignment]
    client.http = httpx.AsyncClient(base_url=client.http.base_url, transport=transport)


def as_httpx_builds(client: ServiceClient, **kwargs: object) -> httpx.Request:
    return client.http.build_request("POST", "/", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def config() -> DownstreamService:
    return DownstreamService(host="127.0.0.1", port=8065, timeout=7.0, concurrency=2)


def boundary_of(request: httpx.Request) -> str:
    return request.headers["content-type"].split("boundary=", 1)[1]


def sent_and_httpx_multipart(
    client: ServiceClient, captured: Captured, **kwargs: object
) -> tuple[httpx.Request, httpx.Request]:
    """The one request sent, and the multipart request httpx builds from `kwargs` framed
    with the sent request's boundary."""
    [sent] = captured.requests
    expected = as_httpx_builds(
        client,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary_of(sent)}"},
        **kwargs,
    )
    return sent, expected


async def test_preprocessing_sends_what_httpx_would(config: DownstreamService) -> None:
    client = PreprocessingClient(config, config.base_url, create_metrics(), TLS)
    captured = Captured()
    answering(client, WAV, captured)
    pcm = bytes(range(256)) * 16

    assert await client.preprocess(pcm) == WAV

    sent, expected = sent_and_httpx_multipart(
        client,
        captured,
        files={"file": ("audio.pcm", pcm, "application/octet-stream")},
    )
    assert sent.content == expected.read()
    assert sorted(sent.headers.multi_items()) == sorted(expected.headers.multi_items())
    assert sent.url == expected.url
    assert sent.extensions["timeout"] == httpx.Timeout(7.0).as_dict()


async def test_transcribing_sends_what_httpx_would(config: DownstreamService) -> None:
    client = TranscribingClient(config, config.base_url, create_metrics(), TLS)
    captured = Captured()
    answering(client, b'{"transcription": "a b"}', captured)

    assert await client.transcribe(WAV) == "a b"

    sent, expected = sent_and_httpx_multipart(
        client,
        captured,
        data={"lang": "english"},
        files={"file": ("audio.wav", WAV, "audio/wav")},
    )
    assert sent.content == expected.read()
    assert sorted(sent.headers.multi_items()) == sorted(expected.headers.multi_items())


async def test_feedback_sends_what_httpx_would(config: DownstreamService) -> None:
    client = FeedbackClient(config, config.base_url, create_metrics(), TLS)
    captured = Captured()
    answering(client, json.dumps({"accuracy": 50, "mistakes": []}).encode(), captured)
    text_id = uuid.uuid4()

    await client.assess(text_id, "ɪ t")

    [sent] = captured.requests
    expected = as_httpx_builds(client, json={"text_id": str(text_id), "actual_result": "ɪ t"})
    assert sent.content == expected.read()
    assert sorted(sent.headers.multi_items()) == sorted(expected.headers.multi_items())


async def test_each_request_has_its_own_boundary(config: DownstreamService) -> None:
    client = PreprocessingClient(config, config.base_url, create_metrics(), TLS)
    captured = Captured()
    answering(client, WAV, captured)

    await client.preprocess(b"\x00" * 8)
    await client.preprocess(b"\x00" * 8)

    first, second = captured.requests
    assert boundary_of(first) != boundary_of(second)


async def test_a_large_file_is_sent_as_it_is_between_its_framing(
    config: DownstreamService,
) -> None:
    client = PreprocessingClient(config, config.base_url, create_metrics(), TLS)
    captured = Captured()
    answering(client, WAV, captured)
    pcm = b"\x01\x02\x03\x04" * (JOIN_BODIES_UP_TO // 4 + 1)
    pieces: list[bytes] = []
    original = client.post

    async def post(content_type: str, parts: tuple[bytes, ...]) -> httpx.Response:
        pieces.extend(parts)
        return await original(content_type, parts)

    client.post = post  # type: ignore[method-assign]

    await client.preprocess(pcm)

    assert len(pieces) == 3
    assert pieces[1] is pcm  # the caller's object: not copied
    sent, expected = sent_and_httpx_multipart(
        client,
        captured,
        files={"file": ("audio.pcm", pcm, "application/octet-stream")},
    )
    assert sent.content == expected.read()
