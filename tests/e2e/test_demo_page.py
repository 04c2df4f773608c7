"""A person's path through the demo page, in Debian's Chromium with a fake microphone."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile

from app.sandbox.catalogue import PLEASE_CALL_STELLA
from tests.browser.chromium import chromium_page, requires_chromium
from tests.live import LiveService
from tests.sandbox.speech import TEST_VOICE, write_wav

pytestmark = [pytest.mark.browser, requires_chromium]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


async def test_a_reading_into_the_microphone_is_assessed_live(
    sandboxed_live: LiveService, tmp_path: Path
) -> None:
    # The fake microphone loops this file: silence around the reading lets the
    # recording start and stop without clipping it.
    reading = write_wav(
        tmp_path / "stella.wav", PLEASE_CALL_STELLA.text, voice=TEST_VOICE,
        lead_silence=0.5, trail_silence=1.0,
    )  # fmt: skip
    seconds = soundfile.info(str(reading)).duration - 0.5  # the trailing silence may be cut
    microphone = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={reading}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with chromium_page(microphone) as page:
        await page.goto(f"{sandboxed_live.base_url}/demo")
        await page.wait_for_function("document.querySelectorAll('#text option').length >= 5")
        await page.select_option("#text", str(PLEASE_CALL_STELLA.id))
        assert "Please call Stella" in await page.inner_text("#passage")

        await page.click("#record")
        # Record for as long as the reading lasts (the page's own timer says how long).
        await page.wait_for_function(
            f"parseFloat(document.getElementById('timer').textContent) >= {seconds}",
            timeout=60_000,
        )
        await page.click("#stop")

        await page.wait_for_selector("#result:not([hidden])", timeout=120_000)
        stages = await page.eval_on_selector_all(
            "#stages li", "items => items.map(i => i.dataset.status)"
        )
        accuracy = await page.inner_text("#accuracy")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "demo-completed.png"), full_page=True)

    assert stages == [
        "created", "started", "preprocessing", "transcribing", "evaluating", "completed"
    ]  # fmt: skip
    score = float(accuracy.rstrip(" %"))
    print(f"demo page accuracy: {score:.1f} %")
    assert score > 20
