"""Sandbox implementations of the three audio services (see docs/audio-services.md).

Small and honest stand-ins for the production ILPS services, so the whole
assessment runs on one machine: real resampling (preprocessing), a real but weak
phoneme recogniser (transcribing, pocketsphinx) and a real alignment against a
built-in catalogue of texts (feedback). Each speaks its production contract.

Run one on its own with ``python -m app.sandbox preprocessing --port 8065``, build
one with ``create_sandbox_app``, or serve one on loopback inside a running event
loop with ``app.sandbox.embedded.serve_sandbox``. Starlette does not run the
lifespan of a mounted sub-application: whoever mounts one must enter
``app.router.lifespan_context(app)`` itself (``serve_sandbox`` does).
"""

from __future__ import annotations

from typing import Literal, get_args

from fastapi import FastAPI

Stage = Literal["preprocessing", "transcribing", "feedback"]
STAGES: tuple[Stage, ...] = get_args(Stage)
# The ports of the production deployment (docs/ilps-deployment.md).
DEFAULT_PORTS: dict[Stage, int] = {"preprocessing": 8065, "transcribing": 8066, "feedback": 8067}


def create_sandbox_app(stage: Stage) -> FastAPI:
    """A new ASGI app serving the sandbox of one pipeline stage.

    The modules are imported here so that using one stage does not import the
    others' dependencies.
    """
    if stage == "preprocessing":
        from app.sandbox import preprocessing

        return preprocessing.create_app()
    if stage == "transcribing":
        from app.sandbox import transcribing

        return transcribing.create_app()
    if stage == "feedback":
        from app.sandbox import feedback

        return feedback.create_app()
    raise ValueError(f"Unknown stage {stage!r}; expected one of {', '.join(STAGES)}.")


__all__ = ["DEFAULT_PORTS", "STAGES", "Stage", "create_sandbox_app"]
