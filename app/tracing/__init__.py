"""Tracing with OpenTelemetry: off unless the standard `OTEL_*` variables ask for it.

This module decides the switch and gives the pipeline a span API that costs nothing when
tracing is off; it imports nothing of OpenTelemetry. `app.tracing.otel` does, and only
`app.main` imports it, and only when tracing is on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

SpanAttributes = Mapping[str, str | int]

_TRUE = ("true", "1", "yes", "on")


def tracing_requested(environment: Mapping[str, str] | None = None) -> bool:
    """On when an exporter other than "none" is named, or an OTLP endpoint is given, and
    the SDK is not disabled (`OTEL_SDK_DISABLED`)."""
    env = os.environ if environment is None else environment
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


class Spans(Protocol):
    """What the background workers need: a span around a claim or a stage call."""

    def span(
        self, name: str, attributes: SpanAttributes, *, start_ns: int | None = None
    ) -> AbstractContextManager[object]:
        """A span made current for the block (the calls inside it are its children).

        `start_ns` (from `time.time_ns()`) starts it earlier than the block, e.g. at the
        claim's query, which runs before the worker knows whether it got a task.
        """
        ...


class NoSpans:
    """Tracing off: no span, no clock read."""

    def span(
        self, name: str, attributes: SpanAttributes, *, start_ns: int | None = None
    ) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


NO_SPANS: Spans = NoSpans()
