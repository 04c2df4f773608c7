"""Sandbox transcribing service: WAV speech to IPA phonemes.

Contract (see docs/audio-services.md): ``POST /`` multipart, form field ``lang=english`` and
``file`` (``*.wav``, ``audio/wav``) → ``200 {"transcription": "<IPA phonemes
separated by spaces>"}``; ``400 {"detail"}`` for another filename or content type;
``503 {"detail"}`` while the language's model is not loaded.

The sandbox also answers ``400`` for a language it has no model for at all (only
``english``): that is a permanent client error, and a 503 would invite clients to
retry for ever. A file that is not readable WAV is a ``400`` too. The model loads
in the background at start-up, so the service answers (``503``) at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile, status
from pydantic import BaseModel

from app.sandbox.audio import InvalidAudioError
from app.sandbox.decoder import DecoderSettings
from app.sandbox.recogniser import PhonemeRecogniser
from app.sandbox.web import add_health_route, require_upload

SERVICE = "sandbox-transcribing"
LANGUAGES = ("english",)

logger = logging.getLogger(__name__)


class ModelState(StrEnum):
    """Where a language's model is in its start-up."""

    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


class LanguageModel:
    """A language's recogniser and whether it can take requests yet."""

    def __init__(self, recogniser: PhonemeRecogniser) -> None:
        self.recogniser = recogniser
        self.state = ModelState.LOADING
        self.error: str | None = None
        self._settled = asyncio.Event()

    async def load(self) -> None:
        """Load the model, recording success or failure instead of raising."""
        try:
            await self.recogniser.load()
        except Exception as error:
            self.state, self.error = ModelState.FAILED, str(error)
            logger.exception("The sandbox recogniser failed to load")
        else:
            self.state = ModelState.LOADED
        finally:
            self._settled.set()

    async def wait(self) -> ModelState:
        """Wait until loading has finished, one way or the other."""
        await self._settled.wait()
        return self.state


class Transcription(BaseModel):
    """The recogniser's answer."""

    transcription: str


def language_models(app: FastAPI) -> dict[str, LanguageModel]:
    """The models of a running app; empty before its lifespan has started."""
    models: dict[str, LanguageModel] = getattr(app.state, "models", {})
    return models


async def wait_for_models(app: FastAPI) -> None:
    """Wait until every model of a running app is loaded; raise if one failed."""
    for language, model in language_models(app).items():
        if await model.wait() is ModelState.FAILED:
            raise RuntimeError(f"The {language} model failed to load: {model.error}")


def create_app(*, workers: int = 1, settings: DecoderSettings | None = None) -> FastAPI:
    """The transcribing service as an ASGI app.

    ``workers`` decoding processes (each with its own decoder) bound how many
    requests are decoded at once; more wait in line.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recogniser = PhonemeRecogniser(workers=workers, settings=settings)
        model = LanguageModel(recogniser)
        app.state.models = {"english": model}
        loading = asyncio.create_task(model.load())
        try:
            yield
        finally:
            loading.cancel()
            with suppress(asyncio.CancelledError):
                await loading
            app.state.models = {}
            recogniser.close()

    app = FastAPI(
        title="ILPS sandbox transcribing",
        description="A weak pocketsphinx phoneme recogniser, not the production model.",
        lifespan=lifespan,
    )

    def health_details() -> dict[str, Any]:
        models = language_models(app)
        return {
            "models": {
                lang: models[lang].state.value if lang in models else "not loaded"
                for lang in LANGUAGES
            }
        }

    add_health_route(app, SERVICE, health_details)

    @app.post("/")
    async def transcribe(
        request: Request, lang: str = Form(...), file: UploadFile = File(...)
    ) -> Transcription:
        language = lang.strip().lower()
        if language not in LANGUAGES:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"Unsupported language {lang!r}; the sandbox recognises: {', '.join(LANGUAGES)}.",
            )
        require_upload(file, suffix=".wav", content_type="audio/wav")
        model = language_models(request.app).get(language)
        if model is None or model.state is not ModelState.LOADED:
            reason = model.error if model is not None and model.error else "it is not loaded yet"
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"The {language} model is unavailable: {reason}.",
            )
        wav = await file.read()
        try:
            phonemes = await model.recogniser.transcribe(wav)
        except InvalidAudioError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        except Exception as error:
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR, f"Transcription failed: {error}"
            ) from error
        return Transcription(transcription=" ".join(phonemes))

    return app
