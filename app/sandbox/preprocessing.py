"""Sandbox preprocessing service: the mobile app's raw PCM to the recogniser's WAV.

Contract (see docs/audio-services.md): ``POST /`` multipart ``file`` (``*.pcm``,
``application/octet-stream``), raw PCM s16le stereo 44.1 kHz → ``200`` WAV mono
16 kHz 16-bit; ``400 {"detail"}`` for another filename, content type, a length not
divisible by 4 (or no bytes at all); ``500 {"detail"}`` when processing fails.
Unlike production it does no noise reduction (see ``pcm_to_wav``).
"""

from __future__ import annotations

from fastapi import FastAPI, File, HTTPException, UploadFile, status
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.sandbox.audio import PCM_FRAME_BYTES, pcm_to_wav
from app.sandbox.web import add_health_route, require_upload

SERVICE = "sandbox-preprocessing"


def create_app() -> FastAPI:
    """The preprocessing service as an ASGI app."""
    app = FastAPI(
        title="ILPS sandbox preprocessing",
        description="Raw PCM s16le stereo 44.1 kHz → WAV mono 16 kHz 16-bit.",
    )
    add_health_route(app, SERVICE)

    @app.post(
        "/",
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}, "description": "The WAV file."}},
    )
    async def preprocess(file: UploadFile = File(...)) -> Response:
        require_upload(file, suffix=".pcm", content_type="application/octet-stream")
        pcm = await file.read()
        if not pcm:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "The file is empty.")
        if len(pcm) % PCM_FRAME_BYTES:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"The file has {len(pcm)} bytes, not a whole number of "
                f"{PCM_FRAME_BYTES}-byte frames of 16-bit stereo PCM.",
            )
        try:
            # Resampling a long recording takes a noticeable moment: keep it off the loop.
            wav = await run_in_threadpool(pcm_to_wav, pcm)
        except Exception as error:
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR, f"Preprocessing failed: {error}"
            ) from error
        return Response(wav, media_type="audio/wav")

    return app
