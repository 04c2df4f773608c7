"""Dependencies shared by the routers: the unit of work, the caller's identity, settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def unit_of_work(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One request, one transaction: committed when the endpoint returns, else rolled back."""
    async with runtime.database.sessions() as session, session.begin():
        yield session


# scope="function" commits before the response is sent: a 200/201 means "stored".
SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]


def caller_user_id(
    x_user_id: Annotated[
        uuid.UUID,
        Header(
            description="The caller's user id, as the ILPS gateway forwards it.",
            examples=["3f0b8c1e-6a0e-4f43-9a57-5b8f9f3f4a10"],
        ),
    ],
) -> uuid.UUID:
    return x_user_id


UserIdDep = Annotated[uuid.UUID, Depends(caller_user_id)]
