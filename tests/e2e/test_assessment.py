"""A synthesised reading assessed through the whole product, sandbox stages included."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sandbox.catalogue import NORTH_WIND_AND_THE_SUN, PLEASE_CALL_STELLA
from tests.live import LiveService
from tests.pipeline.conftest import wait_terminal
from tests.sandbox.speech import TEST_VOICE, speak_pcm


async def upload(live: LiveService, user_id: uuid.UUID, text_id: uuid.UUID, pcm: bytes) -> str:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
        response = await client.post(
            "/transcribe",
            data={"title": "Please call Stella", "user_id": str(user_id), "text_id": str(text_id)},
            files={"file": ("recording.pcm", pcm, "application/octet-stream")},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def test_a_reading_scores_twice_as_high_against_its_own_text(
    sandboxed_live: LiveService, engine: AsyncEngine
) -> None:
    pcm = speak_pcm(PLEASE_CALL_STELLA.text, voice=TEST_VOICE)
    user_id = uuid.uuid4()
    right = await upload(sandboxed_live, user_id, PLEASE_CALL_STELLA.id, pcm)
    wrong = await upload(sandboxed_live, user_id, NORTH_WIND_AND_THE_SUN.id, pcm)

    right_row = await wait_terminal(engine, right, within=120)
    wrong_row = await wait_terminal(engine, wrong, within=120)

    assert right_row["status"] == wrong_row["status"] == "completed", (
        right_row["comment"], wrong_row["comment"],
    )  # fmt: skip
    print(
        f"accuracy: right text {right_row['accuracy']:.1f} %, wrong {wrong_row['accuracy']:.1f} %"
    )
    assert right_row["accuracy"] >= 2 * wrong_row["accuracy"]
    assert right_row["result"] == wrong_row["result"]  # one recording, one transcription
    assert all(set(m) == {"reference", "actual", "type"} for m in right_row["mistakes"])


async def test_an_unknown_text_fails_with_the_feedback_services_reason(
    sandboxed_live: LiveService, engine: AsyncEngine
) -> None:
    pcm = speak_pcm("Please call Stella.", voice=TEST_VOICE)
    task_id = await upload(sandboxed_live, uuid.uuid4(), uuid.uuid4(), pcm)

    row = await wait_terminal(engine, task_id, within=120)

    assert row["status"] == "failed"
    assert row["comment"] == "feedback failed: the service answered HTTP 404: Text not found."
