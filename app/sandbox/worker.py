"""The decoding process of the transcribing sandbox: ``python -m app.sandbox.worker``.

It speaks length-prefixed frames (a 4-byte big-endian length, then the bytes)
on stdin/stdout. It first sends a JSON status (``{"ready": true}`` or
``{"error": ...}``), then answers each WAV file it reads with one JSON reply:
``{"phonemes": [...]}``, ``{"invalid_audio": ...}`` or ``{"error": ...}``. It
exits when its input closes, so it never outlives the service that started it.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import asdict
from typing import IO, Any

from app.sandbox.audio import InvalidAudioError, read_wav
from app.sandbox.decoder import DecoderSettings, PhonemeDecoder

_LENGTH = struct.Struct(">I")


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    """Send one frame and flush it."""
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> bytes | None:
    """Receive one frame; None when the other end has closed the pipe."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def encode_settings(settings: DecoderSettings) -> str:
    """Settings as the worker's command-line argument."""
    return json.dumps(asdict(settings))


def _reply(channel: IO[bytes], message: dict[str, Any]) -> None:
    write_frame(channel, json.dumps(message).encode())


def main(argv: list[str]) -> None:
    """Serve decoding requests on stdin/stdout until stdin closes."""
    # Keep the real stdout for frames and send file descriptor 1 to stderr, so
    # nothing a library prints can corrupt the channel.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer

    decoder = PhonemeDecoder(DecoderSettings(**json.loads(argv[0])) if argv else None)
    try:
        decoder.load()
    except Exception as error:
        _reply(channel, {"error": f"{type(error).__name__}: {error}"})
        return
    _reply(channel, {"ready": True})

    while (wav := read_frame(requests)) is not None:
        try:
            reply: dict[str, Any] = {"phonemes": decoder.recognise(read_wav(wav))}
        except InvalidAudioError as error:
            reply = {"invalid_audio": str(error)}
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        try:
            _reply(channel, reply)
        except BrokenPipeError:
            return  # the service has gone


if __name__ == "__main__":
    main(sys.argv[1:])
