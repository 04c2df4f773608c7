"""Audio conversions of the sandbox: the mobile app's PCM to WAV, and WAV to samples."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

PCM_SAMPLE_RATE = 44_100
PCM_CHANNELS = 2
PCM_FRAME_BYTES = 2 * PCM_CHANNELS  # signed 16-bit samples, interleaved
WAV_SAMPLE_RATE = 16_000


class InvalidAudioError(ValueError):
    """The bytes are not audio in the expected format."""


def to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Floats in [-1, 1) to 16-bit samples, clipping rather than wrapping overshoots."""
    scaled = np.clip(np.round(samples * 32768.0), -32768, 32767)
    return np.asarray(scaled, dtype=np.int16)


def pcm_to_wav(pcm: bytes) -> bytes:
    """Raw PCM s16le stereo 44.1 kHz to a WAV file, mono 16 kHz 16-bit.

    The channels are averaged and the signal resampled with soxr's high-quality
    filter. No noise reduction: with noisereduce's defaults the sandbox recogniser
    was measured to do markedly worse.
    """
    if len(pcm) % PCM_FRAME_BYTES:
        raise InvalidAudioError(
            f"{len(pcm)} bytes is not a whole number of {PCM_FRAME_BYTES}-byte stereo frames."
        )
    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, PCM_CHANNELS)
    mono = frames.astype(np.float32).mean(axis=1) / 32768.0
    resampled = soxr.resample(mono, PCM_SAMPLE_RATE, WAV_SAMPLE_RATE, quality="HQ")
    buffer = io.BytesIO()
    soundfile.write(buffer, to_int16(resampled), WAV_SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def read_wav(data: bytes) -> npt.NDArray[np.int16]:
    """Decode a WAV file to mono 16 kHz 16-bit samples, whatever its channels and rate."""
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise InvalidAudioError(f"The file is not a readable WAV file: {error}") from error
    mono = np.asarray(samples, dtype=np.float32).mean(axis=1)
    # The contract sends 16 kHz mono, but a sandbox may as well accept any WAV.
    if rate != WAV_SAMPLE_RATE:
        mono = soxr.resample(mono, rate, WAV_SAMPLE_RATE)
    return to_int16(mono)
