"""Sandbox feedback service: align a transcription with a text's reference phonemes.

Contract (see docs/audio-services.md): ``POST /`` JSON ``{"text_id", "actual_result"}`` →
``200 {"accuracy": 0..100, "mistakes": [...]}``; an unknown text id is
``404 {"detail"}`` (production relays the texts service's answer); a malformed
body is FastAPI's ``422``. The texts come from the built-in catalogue, which
``GET /texts`` and ``GET /texts/{id}`` list with their reference transcriptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Literal
from uuid import UUID

from fastapi import FastAPI, HTTPException, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.sandbox.alignment import Operation, accuracy, align
from app.sandbox.catalogue import CATALOGUE, Reference, find_reference, references
from app.sandbox.web import add_health_route

SERVICE = "sandbox-feedback"
TEXT_NOT_FOUND = "Text not found."
# Far more than any reading (two hours of speech or so); it bounds the time and
# memory one request can make the alignment take.
MAX_RESULT_CHARS = 200_000


class FeedbackRequest(BaseModel):
    """What the task manager sends: the text read and what the recogniser heard."""

    text_id: UUID
    actual_result: str = Field(max_length=MAX_RESULT_CHARS)


class Phoneme(BaseModel):
    """A phoneme and its index in its sequence (reference or actual)."""

    position: int
    value: str


MistakeType = Literal["Replacement", "Insertion", "Deletion"]
_MISTAKE_TYPES: dict[Operation, MistakeType] = {
    Operation.REPLACEMENT: "Replacement",
    Operation.INSERTION: "Insertion",
    Operation.DELETION: "Deletion",
}


class Mistake(BaseModel):
    """One difference between the reference and the reading."""

    reference: Phoneme | None
    actual: Phoneme | None
    type: MistakeType


class Feedback(BaseModel):
    """The assessment of one reading."""

    accuracy: float = Field(ge=0, le=100)
    mistakes: list[Mistake]


class CatalogueText(BaseModel):
    """A text of the catalogue with its reference transcription."""

    id: UUID
    title: str
    text: str
    source: str
    transcription: str = Field(description="Reference IPA phonemes separated by spaces.")


def assess(reference: Sequence[str], actual: Sequence[str]) -> Feedback:
    """Align a reading with its reference and list the mistakes.

    ``accuracy`` is matches ÷ alignment length × 100 (see ``alignment.accuracy``),
    rounded to two decimals; positions index the two phoneme lists.
    """
    steps = align(reference, actual)
    mistakes = [
        Mistake(
            reference=None
            if step.reference is None
            else Phoneme(position=step.reference, value=reference[step.reference]),
            actual=None
            if step.actual is None
            else Phoneme(position=step.actual, value=actual[step.actual]),
            type=_MISTAKE_TYPES[step.operation],
        )
        for step in steps
        if step.operation in _MISTAKE_TYPES
    ]
    return Feedback(accuracy=round(accuracy(steps), 2), mistakes=mistakes)


def _listing(reference: Reference) -> CatalogueText:
    text = reference.text
    return CatalogueText(
        id=text.id,
        title=text.title,
        text=text.text,
        source=text.source,
        transcription=reference.transcription,
    )


def _known(text_id: UUID) -> Reference:
    reference = find_reference(text_id)
    if reference is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, TEXT_NOT_FOUND)
    return reference


def create_app() -> FastAPI:
    """The feedback service as an ASGI app."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Read the dictionary now, so a broken install fails at start-up and the
        # first request is not slow.
        await run_in_threadpool(references)
        yield

    app = FastAPI(
        title="ILPS sandbox feedback",
        description="Needleman–Wunsch alignment against a built-in catalogue of texts.",
        lifespan=lifespan,
    )
    add_health_route(app, SERVICE, lambda: {"texts": len(CATALOGUE)})

    @app.post("/", responses={404: {"description": TEXT_NOT_FOUND}})
    def feedback(body: FeedbackRequest) -> Feedback:
        # A plain def: FastAPI runs it on its thread pool, as the alignment is CPU work.
        reference = _known(body.text_id)
        return assess(reference.phonemes, body.actual_result.split())

    @app.get("/texts")
    def list_texts() -> list[CatalogueText]:
        return [_listing(references()[text.id]) for text in CATALOGUE]

    @app.get("/texts/{text_id}", responses={404: {"description": TEXT_NOT_FOUND}})
    def get_text(text_id: UUID) -> CatalogueText:
        return _listing(_known(text_id))

    return app
