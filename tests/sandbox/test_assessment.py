"""A whole assessment through the three sandboxes: speech in, accuracy out.

Each catalogue text is synthesised, uploaded as the mobile app would, and
assessed against every text. The right text must score at least twice the best
wrong one: the sandbox recogniser is weak, but not blind.
"""

from __future__ import annotations

import httpx
import pytest

from app.sandbox.catalogue import CATALOGUE, PLEASE_CALL_STELLA, Text

from .conftest import TEST_VOICE
from .speech import speak_pcm


async def transcribe(
    preprocessing: httpx.AsyncClient, transcribing: httpx.AsyncClient, pcm: bytes
) -> str:
    """Run the first two stages exactly as the task manager calls them."""
    wav = await preprocessing.post(
        "/", files={"file": ("audio.pcm", pcm, "application/octet-stream")}
    )
    assert wav.status_code == 200, wav.text
    result = await transcribing.post(
        "/", data={"lang": "english"}, files={"file": ("audio.wav", wav.content, "audio/wav")}
    )
    assert result.status_code == 200, result.text
    transcription: str = result.json()["transcription"]
    return transcription


async def accuracies(feedback: httpx.AsyncClient, transcription: str) -> dict[str, float]:
    """The accuracy of one transcription against every catalogue text, by title."""
    scores: dict[str, float] = {}
    for text in CATALOGUE:
        response = await feedback.post(
            "/", json={"text_id": str(text.id), "actual_result": transcription}
        )
        assert response.status_code == 200, response.text
        scores[text.title] = response.json()["accuracy"]
    return scores


@pytest.mark.parametrize(
    ("text", "voice"),
    [(text, TEST_VOICE) for text in CATALOGUE] + [(PLEASE_CALL_STELLA, "en-us")],
    ids=[f"{text.title}-{TEST_VOICE}" for text in CATALOGUE] + ["Please call Stella-en-us"],
)
async def test_the_right_text_scores_at_least_twice_a_wrong_one(
    speech: None,
    preprocessing: httpx.AsyncClient,
    transcribing: httpx.AsyncClient,
    feedback: httpx.AsyncClient,
    text: Text,
    voice: str,
) -> None:
    transcription = await transcribe(preprocessing, transcribing, speak_pcm(text.text, voice=voice))
    scores = await accuracies(feedback, transcription)
    right = scores.pop(text.title)
    best_wrong = max(scores.values())
    print(f"\n{text.title} ({voice}): right {right:.1f} %, best wrong {best_wrong:.1f} % {scores}")
    assert right >= 2 * best_wrong
