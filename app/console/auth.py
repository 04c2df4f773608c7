"""Who is an operator: a trusted client (`MANAGER_TRUSTED_CLIENTS`) presenting the token.

The console is off (404 on every route) while `MANAGER_OPERATOR_TOKEN` is unset. The token
comes as `Authorization: Bearer <token>` (scripts), or the browser shows it once to the
login form, which sets a cookie holding a value derived from it (not the token itself).

CSRF: a request authenticated by the cookie that changes anything must also carry the
CSRF token (a form field or `X-CSRF-Token`), derived from the operator token, so another
site's form cannot act with an operator's cookie; the cookie is also SameSite=Strict. A
request with the Authorization header needs none: browsers never add it on their own.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.api.deps import SettingsDep
from app.config import Settings

TOKEN_COOKIE = "ilps_operator"
NAME_COOKIE = "ilps_operator_name"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
OPERATOR_HEADER = "X-Operator"
OPERATOR_NAME_MAX = 64
FORBIDDEN = "Operators only."

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def console_enabled(settings: Settings) -> None:
    if settings.operator_token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Not Found")


def token_matches(settings: Settings, presented: str | None) -> bool:
    assert settings.operator_token is not None
    expected = settings.operator_token.get_secret_value().encode()
    return presented is not None and hmac.compare_digest(presented.encode(), expected)


def csrf_token(settings: Settings) -> str:
    """A value a page carries in its forms; not the operator token itself."""
    assert settings.operator_token is not None
    key = settings.operator_token.get_secret_value().encode()
    return hmac.new(key, b"console-csrf", hashlib.sha256).hexdigest()


def session_cookie(settings: Settings) -> str:
    """What the login cookie holds: derived from the token, so the cookie is not the token."""
    assert settings.operator_token is not None
    key = settings.operator_token.get_secret_value().encode()
    return hmac.new(key, b"console-session", hashlib.sha256).hexdigest()


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def peer_trusted(request: Request, settings: Settings) -> bool:
    return settings.is_trusted_client(request.client.host if request.client else None)


async def _csrf_from(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def operator_name(request: Request) -> str:
    name = request.headers.get(OPERATOR_HEADER) or request.cookies.get(NAME_COOKIE) or ""
    name = name.strip()[:OPERATOR_NAME_MAX]
    host = request.client.host if request.client else "unknown"
    return name or f"operator@{host}"


def operator_by_bearer(request: Request, settings: Settings) -> bool:
    """A trusted client presenting the operator token in `Authorization` (scripts)."""
    if settings.operator_token is None or not peer_trusted(request, settings):
        return False
    return token_matches(settings, bearer(request))


def operator_by_headers(request: Request, settings: Settings) -> bool:
    """What the headers alone show: the token, or the login cookie (the CSRF token of a
    cookie's change is checked later, by `require_operator`, as it may be in the form)."""
    if settings.operator_token is None or not peer_trusted(request, settings):
        return False
    if bearer(request) is not None:
        return token_matches(settings, bearer(request))
    cookie = request.cookies.get(TOKEN_COOKIE) or ""
    return hmac.compare_digest(cookie.encode(), session_cookie(settings).encode())


async def require_operator(request: Request, settings: SettingsDep) -> str:
    """The operator's name (for the history); 404 when the console is off, else 403."""
    console_enabled(settings)
    if not peer_trusted(request, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)
    header_token = bearer(request)
    if header_token is not None:
        if not token_matches(settings, header_token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)
        return operator_name(request)
    cookie = request.cookies.get(TOKEN_COOKIE) or ""
    if not hmac.compare_digest(cookie.encode(), session_cookie(settings).encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        (await _csrf_from(request)) or "", csrf_token(settings)
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="The CSRF token is missing.")
    return operator_name(request)


OperatorDep = Annotated[str, Depends(require_operator)]


async def optional_operator(request: Request, settings: SettingsDep) -> str | None:
    """The operator's name when the caller is one, else None (for routes owners share)."""
    return operator_name(request) if operator_by_bearer(request, settings) else None


MaybeOperatorDep = Annotated[str | None, Depends(optional_operator)]
