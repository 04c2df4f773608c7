"""Who is calling: the gateway's `X-User-Id`, or a verified JWT when a secret is configured.

Without `MANAGER_AUTH_JWT_SECRET` the service believes the id its caller forwards, but
only from `MANAGER_TRUSTED_CLIENTS` (the gateway's networks): anyone else gets 403. With
it, the resource routes require a token signed with that secret (HS256) whose `sub` is
the user id and which carries `exp` (and the configured `aud` and `iss`, when set), from
any address, and ignore `X-User-Id`.

One identity per request: a repeated `X-User-Id` is 400, and a `user_id` query parameter
that names someone else than the header or the token is 403.

The legacy routes take the user id from the body in every mode; only trusted clients
may call them. docs/security.md describes the whole trust model.
"""

from __future__ import annotations

import logging
import uuid

import jwt
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers

from app.config import Settings

ALGORITHMS = ["HS256"]
INVALID_TOKEN = "The access token is not valid."
GATEWAY_ONLY = "This route is for the ILPS gateway only."
UNTRUSTED_HEADER = "X-User-Id is believed only from the ILPS gateway's network."
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


def forwarded_user_header(headers: Headers) -> str | None:
    """The one `X-User-Id` value; 400 when the header is repeated (whose would it be?)."""
    values = headers.getlist("x-user-id")
    if len(values) > 1:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Send the X-User-Id header once.")
    return values[0] if values else None


def parse_user_id(raw: str) -> uuid.UUID:
    """The header's value as a user id, with FastAPI's own 422 when it is not one."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise RequestValidationError(
            [
                {
                    "type": "uuid_parsing",
                    "loc": ("header", "X-User-Id"),
                    "msg": "Input should be a valid UUID",
                    "input": raw,
                }
            ]
        ) from None


def resolve_caller(
    settings: Settings,
    *,
    client_host: str | None,
    forwarded_user_id: uuid.UUID | None,
    authorization: str | None,
    access_token: str | None = None,
    query_user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """The caller's user id by the configured rule (token, or a trusted gateway's header).

    `query_user_id` is EventSource's stand-in for the header: from a trusted client it
    names the caller when the header is absent; anywhere it must agree with the identity.
    """
    if settings.auth_jwt_secret is not None:
        token = bearer_token(authorization) or access_token
        if token is None:
            raise unauthorized(
                "Send 'Authorization: Bearer <token>' (or the access_token query parameter)."
            )
        caller = user_from_token(token, settings)
    else:
        require_trusted_client(settings, client_host, detail=UNTRUSTED_HEADER)
        named = forwarded_user_id or query_user_id
        if named is None:
            # 401 rather than 422: the request is well-formed, the caller is just not named.
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="Pass the caller's user id in the X-User-Id header.",
            )
        caller = named
    if query_user_id is not None and query_user_id != caller:
        log.info("user_id query parameter disagrees with the caller's identity")
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="The user_id query parameter names another user than the caller.",
        )
    return caller


def require_trusted_client(
    settings: Settings, client_host: str | None, *, detail: str = GATEWAY_ONLY
) -> None:
    """403 for a caller outside `MANAGER_TRUSTED_CLIENTS`: its X-User-Id or body naming
    a user is not believed."""
    if not settings.is_trusted_client(client_host):
        log.warning("request refused to untrusted client %s", client_host)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=detail,
        )
