"""Whose word the service takes for a client's address: the peer's, or a named proxy's.

The address decides whether `X-User-Id` and the legacy routes are believed
(`MANAGER_TRUSTED_CLIENTS`), so a client must not be able to name it. uvicorn itself is
always run without proxy handling (start.py); only when `MANAGER_FORWARDED_ALLOW_IPS`
names the proxies does the app read X-Forwarded-For, and only from them. `Forwarded`
(RFC 7239) is never read.
"""

from __future__ import annotations

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.config import Settings


def install_forwarded_headers(app: FastAPI, settings: Settings) -> None:
    """Take the client's address from X-Forwarded-For, from the configured proxies only."""
    if settings.forwarded_allow_ips is not None:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)


def trust_warning(settings: Settings) -> str | None:
    """The one start-up warning when anyone who reaches the port can name any user."""
    reasons: list[str] = []
    if settings.trusts_everyone:
        reasons.append("MANAGER_TRUSTED_CLIENTS=* believes X-User-Id from any address")
    if settings.forwarded_allow_ips is not None and settings.forwarded_allow_ips.strip() == "*":
        reasons.append("MANAGER_FORWARDED_ALLOW_IPS=* lets any client name its own address")
    if not reasons:
        return None
    if settings.auth_jwt_secret is not None:
        reasons.append("(resource routes still require a token; legacy routes do not)")
    return "the service trusts everyone: " + "; ".join(reasons)
