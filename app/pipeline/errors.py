"""How a stage call failed, and whether trying again can help.

A failure carries two texts. `reason` is the technical one (exception class, the
error's own text, the body of an error answer): it goes to the logs and to the retry
rows of `task_events`, which no learner sees. `user_message` names the kind of fault in
words a learner may read in the task's `comment`: a transport error's text can carry
internal host names, and an error page from a proxy can carry anything, so neither is
quoted there. The only text of the service's own that reaches the comment is a string
`detail` of a JSON error body, which is how the audio services word errors for users.
"""

from __future__ import annotations

import json

import httpx

from app.pipeline.storable import storable_text

_MAX_REASON = 300


class StageFailure(Exception):
    """A stage call failed; `reason` for operators, `user_message` for learners."""

    transient = False

    def __init__(
        self, reason: str, *, user_message: str | None = None, kind: str | None = None
    ) -> None:
        self.reason = _one_line(storable_text(reason))
        # A short label for grouping failures ("HTTP 503", "timeout", "invalid response"):
        # the reason up to its first colon unless the caller names it.
        self.kind = kind or self.reason.split(":", 1)[0][:60]
        self.user_message = (
            self.reason if user_message is None else _one_line(storable_text(user_message))
        )
        super().__init__(self.reason)


class TransientFailure(StageFailure):
    """Connection errors, timeouts, 5xx and 429: worth retrying after a pause."""

    transient = True


class PermanentFailure(StageFailure):
    """Any other 4xx, or an answer we cannot use: retrying would fail the same way."""


def failure_from_response(response: httpx.Response) -> StageFailure:
    """Classify a non-2xx answer; learners see the service's own `detail` when it gave one."""
    code = response.status_code
    reason = f"HTTP {code}: {_body_text(response)}"
    detail = _user_detail(response)
    user_message = f"the service answered HTTP {code}" + (f": {detail}" if detail else "")
    if code >= 500 or code == 429:
        return TransientFailure(reason, user_message=user_message, kind=f"HTTP {code}")
    return PermanentFailure(reason, user_message=user_message, kind=f"HTTP {code}")


def failure_from_transport(error: httpx.TransportError, timeout: float) -> TransientFailure:
    if isinstance(error, httpx.TimeoutException):
        return TransientFailure(
            f"timed out after {timeout:g}s ({type(error).__name__})",
            user_message=f"the service timed out (no answer within {timeout:g}s)",
            kind="timeout",
        )
    return TransientFailure(
        f"connection error ({type(error).__name__}: {error})",
        user_message="the service could not be reached",
        kind="connection error",
    )


def _body_text(response: httpx.Response) -> str:
    """The whole error body, for logs: the `detail` if any, else the JSON or text."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    return json.dumps(body, ensure_ascii=False)


def _user_detail(response: httpx.Response) -> str | None:
    """The service's message for users: a string `detail` of a JSON object, nothing else.

    A list `detail` is a framework's validation report (field paths, input values), and
    any other body may come from a proxy in between: those stay in the logs.
    """
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"].strip():
        detail: str = body["detail"]
        return detail
    return None


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 1] + "…"
