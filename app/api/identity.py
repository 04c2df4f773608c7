"""Who is calling: the gateway's `X-User-Id`, or a verified JWT when a secret is configured.

Without `MANAGER_AUTH_JWT_SECRET` the service trusts the id its caller forwards, so it
must sit behind the ILPS gateway. With it, the resource routes require a token signed
with that secret (HS256) whose `sub` is the user id and which carries `exp` (and the
configured `aud` and `iss`, when set), and ignore `X-User-Id`.

The legacy routes take the user id from the body in every mode; `MANAGER_TRUSTED_CLIENTS`
limits them to the gateway's addresses.
"""

from __future__ import annotations

import logging
import uuid

import jwt
from fastapi import HTTPException, status

from app.config import Settings

ALGORITHMS = ["HS256"]
INVALID_TOKEN = "The access token is not valid."
log = logging.getLogger(__name__)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def refused_token(reason: str) -> HTTPException:
    """401 with one plain body; the reason goes to the log only, so that a prober
    learns nothing about which check failed."""
    log.info("access token refused: %s", reason)
    return unauthorized(INVALID_TOKEN)


def user_from_token(token: str, settings: Settings) -> uuid.UUID:
    """The user id a valid token names; 401 for anything else."""
    assert settings.auth_jwt_secret is not None
    required = ["sub", "exp"]
    if settings.auth_jwt_audience is not None:
        required.append("aud")
    if settings.auth_jwt_issuer is not None:
        required.append("iss")
    try:
        claims = jwt.decode(
            token,
            settings.auth_jwt_secret.get_secret_value(),
            algorithms=ALGORITHMS,
            audience=settings.auth_jwt_audience,
            issuer=settings.auth_jwt_issuer,
            # Without a configured audience a token's `aud` is not checked.
            options={"require": required, "verify_aud": settings.auth_jwt_audience is not None},
        )
    except jwt.InvalidTokenError as error:
        # PyJWT's messages name the failed check: "Signature has expired", "Invalid
        # audience", "Token is missing the "exp" claim", "Signature verification failed".
        raise refused_token(f"{type(error).__name__}: {error}") from None
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise refused_token("the subject is not a user id") from None


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def resolve_caller(
    settings: Settings,
    *,
    forwarded_user_id: uuid.UUID | None,
    authorization: str | None,
    access_token: str | None = None,
) -> uuid.UUID:
    """The caller's user id by the configured rule (token, or the gateway's header)."""
    if settings.auth_jwt_secret is not None:
        token = bearer_token(authorization) or access_token
        if token is None:
            raise unauthorized(
                "Send 'Authorization: Bearer <token>' (or the access_token query parameter)."
            )
        return user_from_token(token, settings)
    if forwarded_user_id is None:
        # 401 rather than 422: the request is well-formed, the caller is just not named.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Pass the caller's user id in the X-User-Id header.",
        )
    return forwarded_user_id


def require_trusted_client(settings: Settings, client_host: str | None) -> None:
    """403 for a legacy call from outside `MANAGER_TRUSTED_CLIENTS` (when it is set)."""
    if not settings.is_trusted_client(client_host):
        log.warning("legacy route refused to untrusted client %s", client_host)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="This route is for the ILPS gateway only.",
        )
