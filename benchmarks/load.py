"""The closed load loop and latency statistics.

The loop is `clients` coroutines, each with one keep-alive connection of the raw client
(`benchmarks.rawhttp`, lighter than httpx: see there), sending its next request as soon as
the last one answered, until a request count or a time cap is reached. Latency is measured
around the request, so it includes the client's own work; that work is reported as
`load_generator_cpu_ms_per_request` (`time.process_time()` around the loop).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.proc import CpuWatch, cpu_seconds
from benchmarks.rawhttp import HttpConnection, HttpResponse
from benchmarks.service import Service


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p90_ms": round(percentile(seconds, 90) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "mean_ms": round(sum(seconds) / len(seconds) * 1000, 2),
    }


def per_item_ms(seconds: float, count: int, digits: int = 2) -> float:
    """`seconds` spread over `count` items (at least one), in milliseconds."""
    return round(seconds / max(count, 1) * 1000, digits)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


def multipart_body(
    fields: Mapping[str, str], file_name: str, file_content: bytes
) -> tuple[bytes, str]:
    """A multipart/form-data body with text fields and one `file` part; (body, content type).

    Encoded once, so the loop sends the same bytes without encoding them per request.
    """
    encoded = httpx.Request(
        "POST",
        "http://127.0.0.1/",
        data=dict(fields),
        files={"file": (file_name, file_content, "application/octet-stream")},
    )
    return encoded.read(), encoded.headers["Content-Type"]


def upload_requests(size: int, users: int) -> list[Request]:
    """POST /tasks with a `size`-byte recording, cycling over `users` callers.

    The bytes are random: real PCM does not compress, and neither should this. The length
    is a multiple of 4, as the preprocessing service wants of stereo 16-bit PCM.
    """
    body, content_type = multipart_body(
        {"title": "Please call Stella", "text_id": str(uuid.uuid4())},
        "recording.pcm",
        os.urandom(size // 4 * 4),
    )
    return [
        Request(
            "POST", "/tasks", {"Content-Type": content_type, "X-User-Id": str(uuid.uuid4())}, body
        )
        for _ in range(users)
    ]


@dataclass
class LoadResult:
    """What a closed-loop run of identical requests measured."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    service_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    machine: dict[str, float] = field(default_factory=dict)
    last: HttpResponse | None = None

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "statuses": dict(self.statuses),
            "elapsed_s": round(self.elapsed, 3),
            "per_second": round(self.rate, 1),
            "latency": latency_summary(self.latencies),
            "service_cpu_ms_per_request": per_item_ms(self.service_cpu_seconds, self.requests),
            "postgres_cpu_ms_per_request": per_item_ms(
                self.machine.get("postgres_cpu_s", 0.0), self.requests
            ),
            "load_generator_cpu_ms_per_request": per_item_ms(
                self.client_cpu_seconds, self.requests
            ),
            "machine": self.machine,
        }


async def closed_loop(
    service: Service,
    requests: Sequence[Request],
    *,
    clients: int,
    max_requests: int,
    max_seconds: float,
    request_timeout: float = 60.0,
) -> LoadResult:
    """`clients` connections to `service`, each sending the next request as soon as the
    last answered, until `max_requests` were sent or `max_seconds` passed."""
    result = LoadResult()
    issued = 0
    deadline = time.monotonic() + max_seconds

    async def client() -> None:
        nonlocal issued
        connection = HttpConnection("127.0.0.1", service.port, timeout=request_timeout)
        try:
            while issued < max_requests and time.monotonic() < deadline:
                request = requests[issued % len(requests)]
                issued += 1
                started = time.perf_counter()
                try:
                    response = await connection.request(
                        request.method, request.path, headers=request.headers, body=request.body
                    )
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                    result.statuses[f"error {type(error).__name__}"] += 1
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.statuses[str(response.status)] += 1
                result.last = response
        finally:
            await connection.close()

    # Our own collector must not pause the clocks (a full collection of this process,
    # with the app's modules imported, takes a few hundred milliseconds).
    gc.collect()
    gc.freeze()
    gc.disable()
    watch = CpuWatch([service.pid])
    cpu_before = cpu_seconds(service.pid)
    client_before = time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        gc.enable()
        gc.unfreeze()
    result.elapsed = time.perf_counter() - started
    result.client_cpu_seconds = time.process_time() - client_before
    result.service_cpu_seconds = cpu_seconds(service.pid) - cpu_before
    result.machine = watch.finish()
    return result
