"""Fake audio services on real loopback sockets: contract checks, latency, failures, counters.

Each task's audio carries a marker (`audio_for`), which the fakes pass along (into the
WAV, into the transcription), so every call can be attributed to its task.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from tests.waiting import eventually_sync

MARKER = re.compile(rb"TASK<([0-9a-f]{32})>")
FEEDBACK_MISTAKES: list[dict[str, Any]] = [
    {
        "reference": {"position": 1, "value": "ɪ"},
        "actual": {"position": 1, "value": "i"},
        "type": "Replacement",
    },
    {"reference": None, "actual": {"position": 4, "value": "ə"}, "type": "Insertion"},
]
FEEDBACK_ACCURACY = 87.5


def audio_for(marker: str, size: int = 4096) -> bytes:
    """PCM-sized bytes (a multiple of 4) carrying `marker` for attribution."""
    head = b"TASK<" + marker.encode() + b">"
    body = head + b"\x00" * max(0, size - len(head))
    return body + b"\x00" * (-len(body) % 4)


def new_marker() -> str:
    return uuid.uuid4().hex


def _marker_in(data: bytes) -> str:
    found = MARKER.search(data)
    return found.group(1).decode() if found else "unknown"


@dataclass
class Call:
    marker: str
    started: float
    finished: float | None = None
    outcome: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None  # the W3C trace context header, when one was sent


class FakeStage:
    """One fake service. `script` holds outcomes to give before behaving normally:
    an int status code, "hang" (no answer within the client's timeout) or "bad-body"."""

    # What `reset` returns every tunable to, so no test inherits another's settings.
    HANG_SECONDS = 5.0
    DETAIL = "fake failure"

    def __init__(self, name: str) -> None:
        self.name = name
        self.latency = 0.0
        self.script: deque[int | str] = deque()
        self.always: int | str | None = None
        self.calls: list[Call] = []
        self.overlaps: list[str] = []
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.hang_seconds = self.HANG_SECONDS
        self.detail = self.DETAIL
        # Put into the text of every good answer (a transcription, the mistakes' values), to
        # test what the task manager stores of text it cannot store as is (NUL, surrogates).
        self.dirty_text = ""
        # The preprocessed WAV is padded to this many bytes (benchmarks want real sizes).
        self.wav_size = 0
        self.app = FastAPI()
        self.port = 0

    # --- bookkeeping -----------------------------------------------------
    def calls_for(self, marker: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.marker == marker]

    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.overlaps.clear()
            self.script.clear()
            self.always = None
            self.latency = 0.0
            self.hang_seconds = self.HANG_SECONDS
            self.detail = self.DETAIL
            self.dirty_text = ""
            self.wav_size = 0

    async def handle(
        self,
        marker: str,
        request: dict[str, Any],
        answer: Callable[[], Response],
        traceparent: str | None = None,
    ) -> Response:
        call = Call(
            marker=marker, started=time.monotonic(), request=request, traceparent=traceparent
        )
        with self._lock:
            self.calls.append(call)
            self._in_flight[marker] += 1
            if self._in_flight[marker] > 1:
                self.overlaps.append(marker)
            outcome = self.script.popleft() if self.script else self.always
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if outcome == "hang":
                await asyncio.sleep(self.hang_seconds)
                call.outcome = "hang"
                return JSONResponse({"detail": "too late"}, status_code=504)
            if isinstance(outcome, int):
                call.outcome = str(outcome)
                return escaped_json({"detail": self.detail}, status_code=outcome)
            if outcome == "bad-body":
                call.outcome = "bad-body"
                return JSONResponse({"unexpected": True})
            call.outcome = "ok"
            return answer()
        finally:
            call.finished = time.monotonic()
            with self._lock:
                self._in_flight[marker] -= 1


def escaped_json(body: Any, status_code: int = 200) -> Response:
    """JSON with every non-ASCII character escaped, so a lone surrogate can be sent."""
    return Response(json.dumps(body), status_code=status_code, media_type="application/json")


def _preprocessing(stage: FakeStage) -> None:
    @stage.app.post("/")
    async def preprocess(
        file: UploadFile = File(...), traceparent: str | None = Header(default=None)
    ) -> Response:
        data = await file.read()
        request = {"filename": file.filename, "content_type": file.content_type, "size": len(data)}
        if (
            not (file.filename or "").endswith(".pcm")
            or file.content_type != "application/octet-stream"
        ):
            return JSONResponse({"detail": "Only .pcm application/octet-stream"}, status_code=400)
        if len(data) % 4:
            return JSONResponse({"detail": "Length not divisible by 4"}, status_code=400)
        marker = _marker_in(data)
        wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"TASK<" + marker.encode() + b">"
        wav += b"\x00" * (stage.wav_size - len(wav))
        return await stage.handle(
            marker, request, lambda: Response(wav, media_type="audio/wav"), traceparent
        )


def _transcribing(stage: FakeStage) -> None:
    @stage.app.post("/")
    async def transcribe(
        lang: str = Form(...),
        file: UploadFile = File(...),
        traceparent: str | None = Header(default=None),
    ) -> Response:
        data = await file.read()
        request = {"lang": lang, "filename": file.filename, "content_type": file.content_type}
        if lang != "english":
            return JSONResponse({"detail": "Unsupported language"}, status_code=400)
        if not (file.filename or "").endswith(".wav") or file.content_type != "audio/wav":
            return JSONResponse({"detail": "Only .wav audio/wav"}, status_code=400)
        marker = _marker_in(data)
        body = {"transcription": f"p l iː z k ɔː l{stage.dirty_text} {marker}"}
        return await stage.handle(marker, request, lambda: escaped_json(body), traceparent)


def _feedback(stage: FakeStage) -> None:
    @stage.app.post("/")
    async def assess(request: Request) -> Response:
        body = await request.json()
        actual = str(body.get("actual_result", ""))
        marker = actual.rsplit(" ", 1)[-1]
        uuid.UUID(body["text_id"])
        mistakes: list[Any] = FEEDBACK_MISTAKES
        if stage.dirty_text:
            dirty = stage.dirty_text
            mistakes = [
                *FEEDBACK_MISTAKES,
                {f"note{dirty}": f"value{dirty}", "score": float("nan")},
            ]
        answer = {"accuracy": FEEDBACK_ACCURACY, "mistakes": mistakes}
        traceparent = request.headers.get("traceparent")
        return await stage.handle(marker, dict(body), lambda: escaped_json(answer), traceparent)


def _serve(stage: FakeStage) -> tuple[uvicorn.Server, threading.Thread]:
    @stage.app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    # Made as TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose protocol is
    # IPPROTO_TCP, and an accepted connection inherits the listener's. Without it, Nagle's
    # algorithm holds the response body (written after its headers) until the client's
    # delayed ACK, about 40 ms later: every call to a fake would take 40 ms, not "at once".
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    stage.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(stage.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    eventually_sync(lambda: server.started, within=10, message=f"fake {stage.name} to start")
    return server, thread


@dataclass
class FakeServices:
    preprocessing: FakeStage
    transcribing: FakeStage
    feedback: FakeStage

    def all(self) -> tuple[FakeStage, FakeStage, FakeStage]:
        return (self.preprocessing, self.transcribing, self.feedback)

    def reset(self) -> None:
        for stage in self.all():
            stage.reset()

    def settings(self) -> dict[str, Any]:
        """`Settings` keyword arguments pointing the task manager at these fakes."""
        values: dict[str, Any] = {}
        for stage in self.all():
            values[f"service_{stage.name}"] = {
                "host": "127.0.0.1",
                "port": stage.port,
                "timeout": 2.0,
            }
        return values

    def environment(self) -> dict[str, str]:
        """The same as environment variables, for a service started as a process."""
        env: dict[str, str] = {}
        for stage in self.all():
            prefix = f"MANAGER_SERVICE_{stage.name.upper()}"
            env[f"{prefix}_HOST"] = "127.0.0.1"
            env[f"{prefix}_PORT"] = str(stage.port)
            env[f"{prefix}_TIMEOUT"] = "2"
        return env


@contextmanager
def running_fakes() -> Iterator[FakeServices]:
    stages = []
    for name, install in (
        ("preprocessing", _preprocessing),
        ("transcribing", _transcribing),
        ("feedback", _feedback),
    ):
        stage = FakeStage(name)
        install(stage)
        stages.append(stage)
    servers = [_serve(stage) for stage in stages]
    try:
        yield FakeServices(*stages)
    finally:
        for server, _ in servers:
            server.should_exit = True
        # Joined, not left to die with the interpreter: a uvloop loop (uvicorn's choice
        # once uvloop is installed) still running in a daemon thread at exit crashes it.
        for _, thread in servers:
            thread.join(timeout=30)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
