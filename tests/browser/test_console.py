"""The operator console in a real browser: live overview, bulk retry, keyboard use."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.browser.chromium import chromium_page, requires_chromium
from tests.conftest import pipeline_settings
from tests.fakes import FakeServices
from tests.live import LiveService
from tests.pipeline.conftest import wait_terminal

pytestmark = [pytest.mark.browser, requires_chromium]

TOKEN = "operator-secret-token"
WAIT_MS = 20000


@pytest.fixture
def settings(fakes: FakeServices) -> Settings:
    return pipeline_settings(fakes, operator_token=TOKEN)


async def sign_in(page: Any, base_url: str) -> None:
    await page.goto(f"{base_url}/console/login")
    await page.get_by_label("Your name").fill("alice")
    await page.get_by_label("Operator token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/console")


async def test_the_overview_shows_a_task_failing_live(
    live: LiveService, fakes: FakeServices, engine: AsyncEngine
) -> None:
    async with chromium_page() as page:
        await sign_in(page, live.base_url)
        assert await page.text_content("#failed-hour") == "0"
        fakes.transcribing.always = 400
        task_id, _ = await live.create(uuid.uuid4())
        # No reload: the page's EventSource brings the new figures.
        await page.wait_for_function(
            "document.getElementById('failed-hour').textContent === '1'", timeout=WAIT_MS
        )
        assert (await wait_terminal(engine, task_id))["status"] == "failed"
        assert await page.locator("#chart svg rect[fill='#c33']").count() == 1


async def test_a_bulk_retry_after_an_outage_completes_the_failures(
    live: LiveService, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.transcribing.always = 503  # an outage: retried, then failed after the last attempt
    tasks = [(await live.create(uuid.uuid4()))[0] for _ in range(2)]
    for task_id in tasks:
        assert (await wait_terminal(engine, task_id))["status"] == "failed"
    fakes.transcribing.always = None

    async with chromium_page() as page:
        await sign_in(page, live.base_url)
        await page.goto(f"{live.base_url}/console/failures?window_hours=1&stage=transcribing")
        row = page.locator("tr", has_text="transcribing failed")
        await row.get_by_role("button", name="Count retryable").click()
        assert "2 would be retried" in (await page.text_content("#bulk-result") or "")
        await page.go_back()
        row = page.locator("tr", has_text="transcribing failed")
        await row.get_by_label("Reason").fill("transcribing is back")
        await row.get_by_role("button", name="Retry these").click()
        assert "2 retried" in (await page.text_content("#bulk-result") or "")

    for task_id in tasks:
        assert (await wait_terminal(engine, task_id))["status"] == "completed"


async def test_the_keyboard_reaches_and_runs_an_action(
    live: LiveService, fakes: FakeServices, engine: AsyncEngine
) -> None:
    fakes.feedback.always = 400
    task_id, _ = await live.create(uuid.uuid4())
    assert (await wait_terminal(engine, task_id))["status"] == "failed"
    fakes.feedback.always = None

    async with chromium_page() as page:
        await sign_in(page, live.base_url)
        await page.goto(f"{live.base_url}/console/tasks/{task_id}")
        focused = ""
        for _ in range(20):  # header links, then the page's own controls
            await page.keyboard.press("Tab")
            focused = await page.evaluate(
                "(document.activeElement.closest('form')?.getAttribute('action') || '')"
                " + '|' + document.activeElement.tagName"
            )
            if focused.endswith("/retry|INPUT"):
                break
        assert focused == f"/console/tasks/{task_id}/retry|INPUT"
        await page.keyboard.type("learner asked")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Retry"
        # The form posts and is redirected back to this same page: wait for that load.
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert await page.text_content("#task-status") != "failed"

    assert (await wait_terminal(engine, task_id))["status"] == "completed"
