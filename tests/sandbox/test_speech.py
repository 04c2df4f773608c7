"""The test-time speech synthesiser."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from app.sandbox.catalogue import QUICK_BROWN_FOX

from .speech import speak_pcm, synthesise, write_wav


def test_synthesis_gives_samples(speech: None) -> None:
    samples, rate = synthesise(QUICK_BROWN_FOX.text)
    assert rate == 22_050
    assert samples.dtype == np.int16
    assert 1.0 < len(samples) / rate < 6.0
    assert np.abs(samples).max() > 1000  # not silence


def test_pcm_is_what_the_mobile_app_uploads(speech: None) -> None:
    pcm = speak_pcm(QUICK_BROWN_FOX.text)
    assert len(pcm) % 4 == 0
    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
    assert np.array_equal(frames[:, 0], frames[:, 1])
    samples, rate = synthesise(QUICK_BROWN_FOX.text)
    assert abs(len(frames) / 44_100 - len(samples) / rate) < 0.01


def test_wav_file_for_a_fake_microphone(speech: None, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "fox.wav", QUICK_BROWN_FOX.text, lead_silence=1.0)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 48_000)
        lead = np.frombuffer(wav.readframes(48_000), dtype="<i2")
    assert not lead.any()
