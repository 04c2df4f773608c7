"""Speech synthesised at test time, so no recordings need to be committed.

espeak-ng comes from the ``espeakng-loader`` wheel (the library and its data) and is
driven through ctypes in synchronous mode: it hands its 16-bit mono samples to a
callback. Helpers turn them into what the clients of the task manager send: raw
PCM s16le stereo 44.1 kHz (the mobile app's upload), and WAV files (for example a
fake microphone for Chromium's ``--use-file-for-fake-audio-capture``).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

try:
    import espeakng_loader
except ImportError:  # pragma: no cover - only without the test dependencies
    espeakng_loader = None

SAMPLE_RATE_PCM = 44_100
DEFAULT_VOICE = "en-us"
# The espeak-ng voice the tests read with: of the voices tried, its Klatt variant
# is the one the sandbox recogniser understands best.
TEST_VOICE = "en-us+klatt4"

# espeak-ng's C API (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAMETER_RATE = 1
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechUnavailableError(RuntimeError):
    """espeak-ng cannot be loaded on this machine."""


class _Espeak:
    """The espeak-ng library, initialised once; it keeps global state, hence the lock."""

    def __init__(self) -> None:
        if espeakng_loader is None:
            raise SpeechUnavailableError("the espeakng-loader package is not installed")
        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as error:
            raise SpeechUnavailableError(f"cannot load libespeak-ng: {error}") from error
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int

        data_path = str(espeakng_loader.get_data_path()).encode()
        self.sample_rate = int(
            lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        )
        if self.sample_rate <= 0:
            raise SpeechUnavailableError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[npt.NDArray[np.int16]] = []
        # Keep a reference: the C library calls it long after this line.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16))
        return 0  # go on synthesising

    def speak(self, text: str, voice: str, words_per_minute: int) -> npt.NDArray[np.int16]:
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_PARAMETER_RATE, words_per_minute, 0)
            self._chunks = []
            encoded = text.encode()
            status = self._lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed ({status})")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def speech_available() -> str | None:
    """None when speech can be synthesised here, otherwise the reason it cannot."""
    try:
        _espeak()
    except SpeechUnavailableError as error:
        return str(error)
    return None


def synthesise(
    text: str, *, voice: str = DEFAULT_VOICE, words_per_minute: int = 160
) -> tuple[npt.NDArray[np.int16], int]:
    """Speak a text: mono 16-bit samples and their sample rate (espeak-ng's, 22 050 Hz).

    ``voice`` is an espeak-ng voice name, optionally with a variant (``"en-us+m3"``).
    """
    engine = _espeak()
    return engine.speak(text, voice, words_per_minute), engine.sample_rate


def resample(samples: npt.NDArray[np.int16], rate: int, new_rate: int) -> npt.NDArray[np.int16]:
    """Resample mono 16-bit samples."""
    if rate == new_rate:
        return samples
    converted = soxr.resample(samples.astype(np.float32) / 32768.0, rate, new_rate)
    return np.asarray(np.clip(np.round(converted * 32768.0), -32768, 32767), dtype=np.int16)


def to_mobile_pcm(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    """Mono samples as the mobile app uploads them: raw s16le, stereo, 44.1 kHz."""
    mono = resample(samples, rate, SAMPLE_RATE_PCM)
    # Both channels carry the same signal, like a phone's microphone duplicated.
    return np.repeat(mono, 2).astype("<i2").tobytes()


def speak_pcm(text: str, *, voice: str = DEFAULT_VOICE, words_per_minute: int = 160) -> bytes:
    """A text spoken as raw PCM s16le stereo 44.1 kHz bytes."""
    samples, rate = synthesise(text, voice=voice, words_per_minute=words_per_minute)
    return to_mobile_pcm(samples, rate)


def write_wav(
    path: Path,
    text: str,
    *,
    voice: str = DEFAULT_VOICE,
    words_per_minute: int = 160,
    sample_rate: int = 48_000,
    lead_silence: float = 0.0,
    trail_silence: float = 0.0,
) -> Path:
    """Write a text spoken as a 16-bit mono WAV file and return its path.

    Silence before and after (in seconds) gives a recorder time to start and stop,
    as a fake microphone that loops the file would otherwise clip the reading.
    """
    samples, rate = synthesise(text, voice=voice, words_per_minute=words_per_minute)
    samples = resample(samples, rate, sample_rate)
    lead = np.zeros(round(lead_silence * sample_rate), dtype=np.int16)
    trail = np.zeros(round(trail_silence * sample_rate), dtype=np.int16)
    soundfile.write(path, np.concatenate([lead, samples, trail]), sample_rate, subtype="PCM_16")
    return path
