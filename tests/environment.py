"""Settings tests start from nothing the developer's shell or folder would add."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import pytest


def clear_manager_environment(
    monkeypatch: pytest.MonkeyPatch, folder: Path, *, also: Collection[str] = ()
) -> None:
    """Remove every MANAGER_ variable (and those in `also`) and work in `folder`, which
    has no `.env`: the settings a test sees are the ones it sets."""
    for name in list(os.environ):
        if name.startswith("MANAGER_") or name in also:
            monkeypatch.delenv(name)
    monkeypatch.chdir(folder)
