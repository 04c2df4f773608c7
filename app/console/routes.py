"""Everything the console serves, as one router for `app.main` to mount."""

from __future__ import annotations

from fastapi import APIRouter

from app.console import api, pages

router = APIRouter()
router.include_router(api.owner_router)
router.include_router(api.router)
router.include_router(pages.login_router)
router.include_router(pages.router)
