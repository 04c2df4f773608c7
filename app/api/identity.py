"""Who is calling: the gateway's `X-User-Id`, or a verified JWT when a secret is configured.

Without `MANAGER_AUTH_JWT_SECRET` the service trusts the id its caller forwards, so it
must sit behind the ILPS gateway. With it, the resource routes require a token signed
with that secret (HS256) whose `sub` is the user id, and ignore `X-User-Id`.
"""

from __future__ import annotations

import uuid

import jwt
from fastapi import HTTPException, status

from app.config import Settings

ALGORITHMS = ["HS256"]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def user_from_token(token: str, secret: str) -> uuid.UUID:
    """The user id a valid token names; 401 for anything else."""
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, options={"require": ["sub"]})
    except jwt.ExpiredSignatureError:
        raise unauthorized("The access token has expired.") from None
    except jwt.InvalidTokenError:
        raise unauthorized("The access token is not valid.") from None
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise unauthorized("The access token's subject is not a user id.") from None


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
    secret = settings.auth_jwt_secret
    if secret is not None:
        token = bearer_token(authorization) or access_token
        if token is None:
            raise unauthorized(
                "Send 'Authorization: Bearer <token>' (or the access_token query parameter)."
            )
        return user_from_token(token, secret.get_secret_value())
    if forwarded_user_id is None:
        # 401 rather than 422: the request is well-formed, the caller is just not named.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Pass the caller's user id in the X-User-Id header.",
        )
    return forwarded_user_id
