"""A small phoneme recogniser: pocketsphinx's en-us model decoding a phone loop.

This is a weak sandbox recogniser (roughly four phonemes in ten wrong on clear
speech), not the production model; it is here so the pipeline runs offline.
"""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pocketsphinx  # type: ignore[import-untyped]
import soundfile
import soxr

from app.sandbox.phonemes import arpabet_to_ipa, model_dir

SAMPLE_RATE = 16_000


class InvalidAudioError(ValueError):
    """The upload is not audio that can be decoded."""


@dataclass(frozen=True, slots=True)
class DecoderSettings:
    """Phone-loop search settings.

    The language weight and word insertion penalty trade phonemes dropped against
    phonemes invented; these values gave the lowest phone error rate on
    synthesised and read speech here. Wide beams cost time but keep the right
    phonemes alive on noisy input.
    """

    language_weight: float = 2.0
    insertion_penalty: float = 0.65
    beam: float = 1e-60
    phone_beam: float = 1e-60

    def pocketsphinx_config(self) -> dict[str, Any]:
        """Keyword arguments for ``pocketsphinx.Config``."""
        folder = model_dir()
        return {
            "hmm": str(folder / "en-us"),
            "allphone": str(folder / "en-us-phone.lm.bin"),
            # A phone loop has no words: no word language model, no dictionary.
            "lm": None,
            "dict": None,
            "lw": self.language_weight,
            "wip": self.insertion_penalty,
            "beam": self.beam,
            "pbeam": self.phone_beam,
            "samprate": SAMPLE_RATE,
            "loglevel": "FATAL",
        }


def read_wav(data: bytes) -> npt.NDArray[np.int16]:
    """Decode a WAV file to mono 16 kHz 16-bit samples, whatever its layout."""
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise InvalidAudioError(f"The file is not a readable WAV file: {error}") from error
    mono = np.asarray(samples, dtype=np.float32).mean(axis=1)
    # The contract promises 16 kHz mono, but a sandbox may as well accept any WAV.
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.asarray(np.clip(np.round(mono * 32768.0), -32768, 32767), dtype=np.int16)


class PhonemeRecogniser:
    """Decodes speech on a private thread pool with one decoder per thread.

    pocketsphinx decoders are not thread-safe and take a moment to build, so each
    worker thread builds its own once and reuses it. The pool size bounds how many
    requests decode at once; the event loop never runs decoding itself.
    """

    def __init__(self, workers: int = 1, settings: DecoderSettings | None = None) -> None:
        self.settings = settings or DecoderSettings()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-asr")
        self._local = threading.local()

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            config = pocketsphinx.Config(**self.settings.pocketsphinx_config())
            decoder = pocketsphinx.Decoder(config)
            self._local.decoder = decoder
        return decoder

    def recognise(self, samples: npt.NDArray[np.int16]) -> list[str]:
        """IPA phonemes heard in mono 16 kHz samples (blocking; call it on a worker)."""
        decoder = self._decoder()
        decoder.start_utt()
        decoder.process_raw(samples.astype("<i2").tobytes(), full_utt=True)
        decoder.end_utt()
        return arpabet_to_ipa(segment.word for segment in decoder.seg())

    def _transcribe(self, wav: bytes) -> list[str]:
        return self.recognise(read_wav(wav))

    async def load(self) -> None:
        """Build a decoder on a worker thread, so the first request is not slow."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._decoder)

    async def transcribe(self, wav: bytes) -> list[str]:
        """IPA phonemes of a WAV file, decoded off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._transcribe, wav
        )

    def close(self) -> None:
        """Stop the worker threads, dropping queued work."""
        self._executor.shutdown(wait=True, cancel_futures=True)
