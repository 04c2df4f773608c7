"""How a stage call failed, and whether trying again can help."""

from __future__ import annotations

import json

import httpx

from app.pipeline.storable import storable_text

_MAX_REASON = 300


class StageFailure(Exception):
    """A stage call failed; `reason` is one line a person can read, and storable."""

    transient = False

    def __init__(self, reason: str) -> None:
        self.reason = _one_line(storable_text(reason))
        super().__init__(self.reason)


class TransientFailure(StageFailure):
    """Connection errors, timeouts, 5xx and 429: worth retrying after a pause."""

    transient = True


class PermanentFailure(StageFailure):
    """Any other 4xx, or an answer we cannot use: retrying would fail the same way."""


def failure_from_response(response: httpx.Response) -> StageFailure:
    """Classify a non-2xx answer, quoting the service's `detail` when it gave one."""
    reason = f"HTTP {response.status_code}: {_detail(response)}"
    if response.status_code >= 500 or response.status_code == 429:
        return TransientFailure(reason)
    return PermanentFailure(reason)


def failure_from_transport(error: httpx.TransportError, timeout: float) -> TransientFailure:
    if isinstance(error, httpx.TimeoutException):
        return TransientFailure(f"timed out after {timeout:g}s ({type(error).__name__})")
    return TransientFailure(f"connection error ({type(error).__name__}: {error})")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    return json.dumps(body, ensure_ascii=False)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 1] + "…"
