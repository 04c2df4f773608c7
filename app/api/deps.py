"""Dependencies shared by the routers: the unit of work, the caller's identity, settings.

They are all `async def`, even those that never await: FastAPI runs a plain `def`
dependency in a worker thread, and that hop cost more than the rest of a page read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.api.identity import forwarded_user_header, resolve_caller
from app.config import Settings
from app.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def unit_of_work(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One request, one transaction: committed when the endpoint returns, else rolled back."""
    async with runtime.database.sessions() as session, session.begin():
        yield session


# scope="function" commits before the response is sent: a 200/201 means "stored".
SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]


async def autocommit_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """For requests that only read: no BEGIN and COMMIT round trips around one query.

    Autocommit, not a read-only transaction: a write through it would commit at once.
    """
    async with runtime.database.autocommit_sessions() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(autocommit_session, scope="function")]


def read_connection(runtime: Runtime) -> AbstractAsyncContextManager[AsyncConnection]:
    """For the lists: a pooled connection in autocommit, without a session (they build no
    ORM objects), to use as `async with read_connection(runtime) as connection:`.

    Opened in the route, not as a yield dependency: FastAPI's machinery around one (an
    exit stack, a shielded context manager) cost a tenth of a page's CPU. It is back in
    the pool before the body is encoded.
    """
    return runtime.database.autocommit.connect()


ForwardedUserId = Annotated[
    uuid.UUID | None,
    Header(
        alias="X-User-Id",
        description="The caller's user id, as the ILPS gateway forwards it "
        "(ignored when the service verifies tokens).",
        examples=["3f0b8c1e-6a0e-4f43-9a57-5b8f9f3f4a10"],
    ),
]
AuthorizationHeader = Annotated[
    str | None,
    Header(
        alias="Authorization",
        description="`Bearer <JWT>` (HS256, `sub` = user id) when MANAGER_AUTH_JWT_SECRET is set.",
    ),
]


async def caller_user_id(
    request: Request,
    settings: SettingsDep,
    x_user_id: ForwardedUserId = None,
    authorization: AuthorizationHeader = None,
) -> uuid.UUID:
    forwarded_user_header(request.headers)  # 400 when repeated
    return resolve_caller(
        settings,
        client_host=_client_host(request),
        forwarded_user_id=x_user_id,
        authorization=authorization,
    )


UserIdDep = Annotated[uuid.UUID, Depends(caller_user_id)]


async def follower_user_id(
    request: Request,
    settings: SettingsDep,
    user_id: Annotated[
        uuid.UUID | None,
        Query(
            description="The caller's user id, for EventSource, which cannot send headers "
            "(from the gateway's network only; 403 when it disagrees with the header or token)."
        ),
    ] = None,
    x_user_id: ForwardedUserId = None,
    authorization: AuthorizationHeader = None,
    access_token: Annotated[
        str | None,
        Query(max_length=4096, description="The JWT, for EventSource (when tokens are verified)."),
    ] = None,
) -> uuid.UUID:
    """Like `caller_user_id`, plus the query parameters a browser's EventSource can send."""
    forwarded_user_header(request.headers)
    return resolve_caller(
        settings,
        client_host=_client_host(request),
        forwarded_user_id=x_user_id,
        authorization=authorization,
        access_token=access_token,
        query_user_id=user_id,
    )


FollowerIdDep = Annotated[uuid.UUID, Depends(follower_user_id)]


def _client_host(request: Request) -> str | None:
    client = request.client
    return client.host if client else None
