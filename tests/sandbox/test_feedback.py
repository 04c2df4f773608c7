"""The feedback sandbox against its contract (docs/audio-services.md), and its catalogue."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.sandbox.catalogue import CATALOGUE, QUICK_BROWN_FOX, references

FOX = str(QUICK_BROWN_FOX.id)
FOX_IPA = "ð ə k w ɪ k b ɹ aʊ n f ɑ k s dʒ ə m p s oʊ v ɝ ð ə l eɪ z i d ɔ ɡ"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def assess(client: httpx.AsyncClient, text_id: str, actual: str) -> dict[str, Any]:
    response = await client.post("/", json={"text_id": text_id, "actual_result": actual})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_health(feedback: httpx.AsyncClient) -> None:
    response = await feedback.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert response.json()["texts"] == len(CATALOGUE)


async def test_reference_phonemes_of_the_fox() -> None:
    assert references()[QUICK_BROWN_FOX.id].transcription == FOX_IPA


async def test_a_perfect_reading(feedback: httpx.AsyncClient) -> None:
    assert await assess(feedback, FOX, FOX_IPA) == {"accuracy": 100.0, "mistakes": []}


async def test_extra_whitespace_between_phonemes_is_ignored(feedback: httpx.AsyncClient) -> None:
    body = await assess(feedback, FOX, "  " + FOX_IPA.replace(" ", "  \t") + "\n")
    assert body == {"accuracy": 100.0, "mistakes": []}


async def test_every_kind_of_mistake_in_the_contract_shape(feedback: httpx.AsyncClient) -> None:
    # "ð ə k w ɪ k ..." read as "d ə k ɪ k ə ...": a replacement, a deletion and an
    # insertion near the start, the rest read right.
    phonemes = FOX_IPA.split()
    actual = ["d", "ə", "k", "ɪ", "k", "ə", *phonemes[6:]]
    body = await assess(feedback, FOX, " ".join(actual))
    assert body["mistakes"] == [
        {
            "reference": {"position": 0, "value": "ð"},
            "actual": {"position": 0, "value": "d"},
            "type": "Replacement",
        },
        {"reference": {"position": 3, "value": "w"}, "actual": None, "type": "Deletion"},
        {"reference": None, "actual": {"position": 5, "value": "ə"}, "type": "Insertion"},
    ]
    columns = len(phonemes) + 1  # one deletion and one insertion add a column each
    assert body["accuracy"] == round(100 * (len(phonemes) - 2) / columns, 2)


async def test_an_empty_reading_scores_zero(feedback: httpx.AsyncClient) -> None:
    body = await assess(feedback, FOX, "")
    assert body["accuracy"] == 0.0
    assert len(body["mistakes"]) == len(FOX_IPA.split())
    assert {mistake["type"] for mistake in body["mistakes"]} == {"Deletion"}


async def test_a_long_wrong_reading_scores_low(feedback: httpx.AsyncClient) -> None:
    body = await assess(feedback, FOX, " ".join(FOX_IPA.split() * 10))
    assert body["accuracy"] == pytest.approx(10.0)


async def test_unknown_text_is_404(feedback: httpx.AsyncClient) -> None:
    response = await feedback.post("/", json={"text_id": UNKNOWN, "actual_result": "a"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Text not found."}


@pytest.mark.parametrize(
    "body",
    [
        {"text_id": "not-a-uuid", "actual_result": "a"},
        {"text_id": FOX},
        {"actual_result": "a"},
        {"text_id": FOX, "actual_result": 5},
        {"text_id": FOX, "actual_result": "a" * 200_001},
    ],
)
async def test_malformed_bodies_are_422(feedback: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await feedback.post("/", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


async def test_texts_lists_the_catalogue(feedback: httpx.AsyncClient) -> None:
    response = await feedback.get("/texts")
    assert response.status_code == 200
    texts = response.json()
    assert [text["id"] for text in texts] == [str(text.id) for text in CATALOGUE]
    for listed, text in zip(texts, CATALOGUE, strict=True):
        assert listed == {
            "id": str(text.id),
            "title": text.title,
            "text": text.text,
            "source": text.source,
            "transcription": references()[text.id].transcription,
        }


async def test_one_text(feedback: httpx.AsyncClient) -> None:
    response = await feedback.get(f"/texts/{FOX}")
    assert response.status_code == 200
    assert response.json()["transcription"] == FOX_IPA
    assert response.json()["title"] == "The quick brown fox"


async def test_unknown_or_malformed_text_id(feedback: httpx.AsyncClient) -> None:
    missing = await feedback.get(f"/texts/{UNKNOWN}")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Text not found."}
    assert (await feedback.get("/texts/42")).status_code == 422
