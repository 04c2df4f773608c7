"""The transcribing sandbox's recogniser: decoder processes behind an async interface.

pocketsphinx holds the GIL while it decodes (measured: decoding a 20-second
reading on a worker thread froze the event loop for over a second), so threads
cannot keep the service, or the task manager it may be embedded in, responsive.
Each decoder therefore lives in its own process (``app.sandbox.worker``), started
as a fresh interpreter: nothing of the host program is re-imported, a crash in
the C library kills only that process, and it exits when its pipe closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from app.sandbox.audio import InvalidAudioError
from app.sandbox.decoder import DecoderSettings
from app.sandbox.worker import encode_settings, read_frame, write_frame

# The folder that holds the ``app`` package, so the worker can import it however
# the service was started.
_IMPORT_ROOT = Path(__file__).resolve().parents[2]


class RecogniserCrashedError(RuntimeError):
    """The decoding process died (a crash in the C library, or the OOM killer)."""


class _Worker:
    """One decoding process; its lock keeps one request at a time on its pipe."""

    def __init__(self, settings: DecoderSettings) -> None:
        path = os.environ.get("PYTHONPATH")
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(_IMPORT_ROOT), *([path] if path else [])]),
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "app.sandbox.worker", encode_settings(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        """The process id."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._process.poll() is None

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        frame = read_frame(self._process.stdout)
        if frame is None:
            code = self._process.wait()
            raise RecogniserCrashedError(f"The decoding process died (exit status {code}).")
        message: dict[str, Any] = json.loads(frame)
        return message

    def wait_ready(self) -> None:
        """Block until the decoder is built; raise if it could not be."""
        with self._lock:
            status = self._receive()
        if "error" in status:
            raise RuntimeError(status["error"])

    def request(self, wav: bytes) -> list[str]:
        """Decode one WAV file (blocking; the waiting releases the GIL)."""
        assert self._process.stdin is not None
        with self._lock:
            try:
                write_frame(self._process.stdin, wav)
            except OSError as error:  # a broken pipe: the process is gone
                raise RecogniserCrashedError("The decoding process died.") from error
            reply = self._receive()
        if "invalid_audio" in reply:
            raise InvalidAudioError(reply["invalid_audio"])
        if "error" in reply:
            raise RuntimeError(reply["error"])
        phonemes: list[str] = reply["phonemes"]
        return phonemes

    def stop(self) -> None:
        """End the process (an answer it is working on is lost)."""
        if self.alive:
            self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()


class PhonemeRecogniser:
    """Transcribes WAV files to IPA phonemes on a small pool of decoding processes.

    ``workers`` bounds how many requests decode at once; more wait in line. The
    first worker starts in ``load``, the others on first use, and a worker that
    died is replaced by the next request that needs it.
    """

    def __init__(self, workers: int = 1, settings: DecoderSettings | None = None) -> None:
        self.settings = settings or DecoderSettings()
        # A slot is a running worker, or None for one not (or no longer) started.
        self._slots: asyncio.Queue[_Worker | None] = asyncio.Queue()
        for _ in range(workers):
            self._slots.put_nowait(None)
        self._started: list[_Worker] = []

    def _retire(self, worker: _Worker) -> None:
        worker.stop()
        if worker in self._started:
            self._started.remove(worker)

    async def _ensure(self, slot: _Worker | None) -> _Worker:
        if slot is not None and slot.alive:
            return slot
        if slot is not None:
            self._retire(slot)
        worker = _Worker(self.settings)
        self._started.append(worker)
        try:
            await asyncio.to_thread(worker.wait_ready)
        except BaseException:
            self._retire(worker)
            raise
        return worker

    async def load(self) -> None:
        """Start the first decoding process and wait for its model; raise if it fails."""
        slot = await self._slots.get()
        try:
            slot = await self._ensure(slot)
        finally:
            self._slots.put_nowait(slot)

    async def transcribe(self, wav: bytes) -> list[str]:
        """IPA phonemes of a WAV file (``InvalidAudioError`` if it is not one)."""
        slot = await self._slots.get()
        try:
            slot = await self._ensure(slot)
            return await asyncio.to_thread(slot.request, wav)
        except RecogniserCrashedError:
            if slot is not None:
                self._retire(slot)
            slot = None
            raise
        finally:
            self._slots.put_nowait(slot)

    @property
    def pids(self) -> list[int]:
        """The ids of the running decoding processes."""
        return [worker.pid for worker in self._started if worker.alive]

    def close(self) -> None:
        """Stop every decoding process."""
        for worker in list(self._started):
            self._retire(worker)
