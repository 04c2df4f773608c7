"""Streaming tests run the app with workers calling the fake audio services."""

from __future__ import annotations

import pytest

from app.config import Settings
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes)
