"""The transcribing sandbox against its contract (docs/audio-services.md)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import wave
from typing import IO

import httpx
import pytest

from app.sandbox import create_sandbox_app
from app.sandbox import recogniser as recogniser_module
from app.sandbox.audio import pcm_to_wav
from app.sandbox.phonemes import ARPABET_TO_IPA
from app.sandbox.recogniser import PhonemeRecogniser
from app.sandbox.transcribing import language_models, wait_for_models
from app.sandbox.worker import write_frame
from tests.waiting import eventually

from .conftest import serving

WAV = "audio/wav"


def silence_wav(seconds: float = 0.5, rate: int = 16_000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(2 * channels * round(seconds * rate)))
    return buffer.getvalue()


async def post(
    client: httpx.AsyncClient,
    data: bytes,
    name: str = "audio.wav",
    kind: str = WAV,
    lang: str = "english",
) -> httpx.Response:
    return await client.post("/", data={"lang": lang}, files={"file": (name, data, kind)})


async def test_health_reports_the_loaded_model(transcribing: httpx.AsyncClient) -> None:
    response = await transcribing.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["models"] == {"english": "loaded"}


async def test_speech_is_transcribed_to_ipa(
    transcribing: httpx.AsyncClient, stella_pcm: bytes
) -> None:
    response = await post(transcribing, pcm_to_wav(stella_pcm))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["transcription"]
    phonemes = body["transcription"].split(" ")
    assert len(phonemes) > 40  # the paragraph has about 190 phonemes
    assert set(phonemes) <= set(ARPABET_TO_IPA.values())


async def test_any_wav_layout_is_accepted(transcribing: httpx.AsyncClient) -> None:
    response = await post(transcribing, silence_wav(rate=44_100, channels=2))
    assert response.status_code == 200
    assert isinstance(response.json()["transcription"], str)


async def test_an_empty_wav_gives_an_empty_transcription(transcribing: httpx.AsyncClient) -> None:
    response = await post(transcribing, silence_wav(seconds=0))
    assert response.status_code == 200
    assert response.json() == {"transcription": ""}


@pytest.mark.parametrize(
    ("name", "kind", "lang", "detail"),
    [
        ("audio.pcm", WAV, "english", "Expected a .wav file, got the filename 'audio.pcm'."),
        (
            "audio.wav",
            "application/octet-stream",
            "english",
            "Expected the content type audio/wav, got 'application/octet-stream'.",
        ),
        (
            "audio.wav",
            "audio/mpeg",
            "english",
            "Expected the content type audio/wav, got 'audio/mpeg'.",
        ),
        (
            "audio.wav",
            WAV,
            "klingon",
            "Unsupported language 'klingon'; the sandbox recognises: english.",
        ),
    ],
)
async def test_rejected_uploads(
    transcribing: httpx.AsyncClient, name: str, kind: str, lang: str, detail: str
) -> None:
    response = await post(transcribing, silence_wav(), name, kind, lang)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


async def test_bytes_that_are_not_wav_are_a_400(transcribing: httpx.AsyncClient) -> None:
    response = await post(transcribing, b"RIFF nonsense, not a wave file")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The file is not a readable WAV file")


@pytest.mark.parametrize("missing", ["lang", "file"])
async def test_missing_fields_are_validation_errors(
    transcribing: httpx.AsyncClient, missing: str
) -> None:
    data = {} if missing == "lang" else {"lang": "english"}
    files = {} if missing == "file" else {"file": ("audio.wav", silence_wav(), WAV)}
    response = await transcribing.post("/", data=data, files=files or None)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", missing]


async def test_503_before_start_up() -> None:
    app = create_sandbox_app("transcribing")  # its lifespan never runs
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        response = await post(client, silence_wav())
    assert response.status_code == 503
    assert response.json() == {"detail": "The english model is unavailable: it is not loaded yet."}


async def test_503_while_loading_then_200(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    original = PhonemeRecogniser.load

    async def slow_load(self: PhonemeRecogniser) -> None:
        await release.wait()
        await original(self)

    monkeypatch.setattr(PhonemeRecogniser, "load", slow_load)
    app = create_sandbox_app("transcribing")
    async with serving(app) as client:
        assert (await client.get("/health")).json()["models"] == {"english": "loading"}
        response = await post(client, silence_wav())
        assert response.status_code == 503
        assert response.json() == {
            "detail": "The english model is unavailable: it is not loaded yet."
        }
        release.set()
        await language_models(app)["english"].wait()
        assert (await post(client, silence_wav())).status_code == 200


async def test_503_when_the_model_failed_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing_load(self: PhonemeRecogniser) -> None:
        raise RuntimeError("acoustic model missing")

    monkeypatch.setattr(PhonemeRecogniser, "load", failing_load)
    app = create_sandbox_app("transcribing")
    async with serving(app) as client:
        await language_models(app)["english"].wait()
        assert (await client.get("/health")).json()["models"] == {"english": "failed"}
        response = await post(client, silence_wav())
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The english model is unavailable: acoustic model missing."
    }


async def test_requests_are_decoded_off_the_event_loop(
    transcribing: httpx.AsyncClient, stella_pcm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = pcm_to_wav(stella_pcm)
    handed_over = threading.Event()
    release = threading.Event()

    def send_and_hold(stream: IO[bytes], payload: bytes) -> None:
        write_frame(stream, payload)
        handed_over.set()
        # Holds the request at the decoder until the loop has shown it keeps running;
        # were this wait on the loop, the loop could not tick and the request would fail.
        if not release.wait(timeout=60):
            raise RuntimeError("the event loop stalled while a request was at the decoder")

    monkeypatch.setattr(recogniser_module, "write_frame", send_and_hold)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    clock = asyncio.create_task(ticker())
    requests = asyncio.gather(*(post(transcribing, wav) for _ in range(2)))
    try:
        await eventually(handed_over.is_set, message="a request to reach the decoder")
        ticks_at_hand_over = ticks
        await eventually(lambda: ticks >= ticks_at_hand_over + 5, message="the loop to tick")
        assert not requests.done()
        release.set()
        responses = await requests
    finally:
        release.set()
        clock.cancel()
    assert [r.status_code for r in responses] == [200, 200]
    # Identical input, identical decoder settings: identical answers.
    assert responses[0].json() == responses[1].json()


async def test_a_dead_decoding_process_is_replaced(
    stella_pcm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_sandbox_app("transcribing")
    async with serving(app) as client:
        await wait_for_models(app)
        recogniser = language_models(app)["english"].recogniser
        # Stand-in for a crash in the C library between two requests: the next
        # request does not notice.
        (pid,) = recogniser.pids
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: pid not in recogniser.pids, message="the worker's death")
        assert (await post(client, silence_wav())).status_code == 200
        # A death in the middle of a request fails that request only.
        (pid,) = recogniser.pids

        def send_then_die(stream: IO[bytes], payload: bytes) -> None:
            write_frame(stream, payload)
            os.kill(pid, signal.SIGKILL)  # the worker has the reading and owes an answer

        monkeypatch.setattr(recogniser_module, "write_frame", send_then_die)
        response = await post(client, pcm_to_wav(stella_pcm))
        monkeypatch.undo()
        assert response.status_code == 500
        assert response.json()["detail"].startswith(
            "Transcription failed: The decoding process died"
        )
        assert (await post(client, silence_wav())).status_code == 200
    assert recogniser.pids == []  # the lifespan's end stopped the worker
