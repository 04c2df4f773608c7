"""End to end: the task manager with its in-process sandbox services, on a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL

from app.config import STAGES, Settings
from app.main import create_app
from tests.conftest import make_settings
from tests.live import LiveService, live_server
from tests.sandbox.speech import speech_available


@pytest.fixture(scope="module")
def sandboxed_live(database_url: URL) -> Iterator[LiveService]:
    """The sandbox asked for, no audio service configured: all three stages are sandboxed."""
    reason = speech_available()
    if reason is not None:
        pytest.skip(reason)
    no_hosts: dict[str, object] = {f"service_{stage}": {} for stage in STAGES}
    settings: Settings = make_settings(worker_concurrency=2, sandbox_services=True, **no_hosts)
    assert settings.sandboxed_stages() == list(STAGES)
    app = create_app(settings, database_url=database_url)
    with live_server(app) as base_url:
        yield LiveService(app=app, base_url=base_url)
