"""/docs and /redoc render our routes in a browser that can reach nothing but the service."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.chromium import chromium_page, requires_chromium
from tests.live import LiveService

pytestmark = [pytest.mark.browser, requires_chromium]

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


async def _render(live: LiveService, path: str, selector: str) -> tuple[list[str], list[str]]:
    """The texts matching `selector` once rendered, and every request that left loopback."""
    blocked: list[str] = []

    async def only_loopback(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).scheme in {"http", "https"} and urlsplit(url).hostname in LOOPBACK:
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort()

    async with chromium_page() as page:
        await page.route("**/*", only_loopback)
        await page.goto(f"{live.base_url}{path}")
        await page.wait_for_selector(selector, timeout=20_000)
        texts = [text.strip() for text in await page.locator(selector).all_inner_texts()]
    return texts, blocked


async def test_swagger_ui_renders_our_routes_offline(live: LiveService) -> None:
    paths, blocked = await _render(live, "/docs", ".opblock-summary-path")

    assert "/tasks" in paths
    assert "/tasks/{task_id}" in paths
    assert "/transcribe" in paths
    assert blocked == []


async def test_redoc_renders_our_routes_offline(live: LiveService) -> None:
    # ReDoc lists each operation with its method and path in the right-hand panel.
    texts, blocked = await _render(live, "/redoc", "[data-section-id^='tag/']")

    assert texts, "ReDoc rendered no tag section"
    page_text = " ".join(texts)
    assert "/tasks" in page_text
    assert blocked == []
