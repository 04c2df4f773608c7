"""The resources of one running process, built by the lifespan and shared by requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.db.engine import Database


@dataclass
class Runtime:
    """What the lifespan created; `extras` lets later components hang their handles here."""

    settings: Settings
    database: Database
    extras: dict[str, Any] = field(default_factory=dict)
