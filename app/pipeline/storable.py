"""Text from the audio services made storable in PostgreSQL, before it reaches a query.

PostgreSQL refuses NUL in `text` and `jsonb`, asyncpg cannot encode a lone surrogate
(which `json.loads` happily returns for `"\\ud800"`), and `jsonb` refuses NaN and the
infinities. One such answer must fail or finish its own task, never the write that
records it, so whatever a stage returns is cleaned where it enters the pipeline.
"""

from __future__ import annotations

import math
import re
from typing import Any

REPLACEMENT = "\ufffd"
# NUL, and any surrogate: a str from JSON holds pairs already joined, so these are lone.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD, so the loss stays visible."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """A JSON value with every string (keys too) cleaned and non-finite numbers as null."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    if isinstance(value, dict):
        return {storable_text(str(key)): storable_json(item) for key, item in value.items()}
    return value
