"""The preprocessing sandbox against its contract (docs/audio-services.md)."""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from app.sandbox import preprocessing as module

PCM = "application/octet-stream"


def read_wav(data: bytes) -> tuple[tuple[int, int, int], npt.NDArray[np.float64]]:
    """(channels, sample width, rate) and the samples in [-1, 1) of a WAV file."""
    with wave.open(io.BytesIO(data)) as wav:
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        frames = wav.readframes(wav.getnframes())
    return layout, np.frombuffer(frames, dtype="<i2") / 32768.0


def tone(seconds: float, frequency: float = 1000.0, rate: int = 44_100) -> bytes:
    """A sine wave as raw PCM s16le stereo, the left channel louder than the right."""
    t = np.arange(round(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * frequency * t)
    stereo = np.stack([0.5 * wave, 0.3 * wave], axis=1)
    return (stereo * 32767).astype("<i2").tobytes()


async def post(
    client: httpx.AsyncClient, data: bytes, name: str = "audio.pcm", kind: str = PCM
) -> httpx.Response:
    return await client.post("/", files={"file": (name, data, kind)})


async def test_health(preprocessing: httpx.AsyncClient) -> None:
    response = await preprocessing.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "sandbox-preprocessing"


async def test_pcm_becomes_mono_16khz_16bit_wav(preprocessing: httpx.AsyncClient) -> None:
    response = await post(preprocessing, tone(2.0))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    layout, samples = read_wav(response.content)
    assert layout == (1, 2, 16_000)  # mono, 16-bit, 16 kHz
    assert len(samples) == 32_000
    # The tone survives resampling: its frequency is kept and the channels averaged.
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16_000 / len(samples) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(samples[1000:-1000] ** 2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.02)


async def test_speech_upload_is_converted(
    preprocessing: httpx.AsyncClient, stella_pcm: bytes
) -> None:
    response = await post(preprocessing, stella_pcm)
    assert response.status_code == 200
    layout, samples = read_wav(response.content)
    assert layout == (1, 2, 16_000)
    assert len(samples) / 16_000 == pytest.approx(len(stella_pcm) / 4 / 44_100, abs=0.01)


async def test_a_single_frame_is_accepted(preprocessing: httpx.AsyncClient) -> None:
    response = await post(preprocessing, b"\x01\x00\x02\x00")
    assert response.status_code == 200
    assert read_wav(response.content)[0] == (1, 2, 16_000)


@pytest.mark.parametrize(
    ("name", "kind", "data", "detail"),
    [
        ("audio.wav", PCM, b"\0" * 8, "Expected a .pcm file, got the filename 'audio.wav'."),
        ("audio", PCM, b"\0" * 8, "Expected a .pcm file, got the filename 'audio'."),
        (
            "audio.pcm",
            "audio/wav",
            b"\0" * 8,
            "Expected the content type application/octet-stream, got 'audio/wav'.",
        ),
        (
            "audio.pcm",
            "text/plain",
            b"\0" * 8,
            "Expected the content type application/octet-stream, got 'text/plain'.",
        ),
        (
            "audio.pcm",
            PCM,
            b"\0" * 6,
            "The file has 6 bytes, not a whole number of 4-byte frames of 16-bit stereo PCM.",
        ),
        ("audio.pcm", PCM, b"", "The file is empty."),
    ],
)
async def test_rejected_uploads(
    preprocessing: httpx.AsyncClient, name: str, kind: str, data: bytes, detail: str
) -> None:
    response = await post(preprocessing, data, name, kind)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


async def test_missing_file_is_a_validation_error(preprocessing: httpx.AsyncClient) -> None:
    response = await preprocessing.post("/", data={"other": "x"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


async def test_a_processing_failure_is_a_500(
    preprocessing: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_pcm: bytes) -> bytes:
        raise MemoryError("out of memory")

    monkeypatch.setattr(module, "pcm_to_wav", broken)
    response = await post(preprocessing, b"\0" * 8)
    assert response.status_code == 500
    assert response.json() == {"detail": "Preprocessing failed: out of memory"}
