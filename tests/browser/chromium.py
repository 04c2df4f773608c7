"""Debian's Chromium driven by Playwright (no browser download: the system executable)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The machine's network is closed: background calls home would only fail, and slowly.
QUIET_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


@asynccontextmanager
async def chromium_page(extra_args: Sequence[str] = ()) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*QUIET_FLAGS, *extra_args]
        )
        try:
            context = await browser.new_context()
            yield await context.new_page()
        finally:
            await browser.close()
