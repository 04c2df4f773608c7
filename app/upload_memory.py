"""A budget for upload bytes held in memory at once.

An upload whose body declares its length takes, before its first byte is read, what
storing it costs (`storage_bytes`: its buffer and the driver's copy) if that much is
free at that moment; it is then parsed straight into memory and stored from there, and
gives the share back once stored. Otherwise it does not wait for memory: it is parsed
as before, holding 1 MiB of its file (Starlette spools the rest to disk) and its capped
text fields (or its Content-Length, if smaller) while it is received, and then waits
for its storage share. Sixteen concurrent 5 MB uploads would need a few hundred MB at
the same moment; with the budget, uploads beyond it are received on disk and stored in
turn, and memory stays flat whatever the concurrency, also when slow clients hold
shares for minutes. The two reservations of a spooled upload never overlap, so they
cannot wait on each other, and a share taken at once never waits at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

# The upload's bytes, and the database driver's copy of them that waits in the
# connection's send buffer until PostgreSQL has read it. (While the driver encodes a
# statement it briefly holds two more copies of that one upload; that happens within
# one step of the event loop, so for one upload at a time per process.)
COPIES_IN_MEMORY = 2


class UploadMemory:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.free = budget_bytes
        self._waiting = 0
        self._changed = asyncio.Condition()

    def storage_bytes(self, upload_bytes: int) -> int:
        """What storing an upload holds (one larger than the whole budget takes it all)."""
        return min(self.budget, upload_bytes * COPIES_IN_MEMORY)

    def fits(self, wanted: int) -> bool:
        return self.free >= min(self.budget, wanted)

    def reserve(self, upload_bytes: int) -> AbstractAsyncContextManager[None]:
        """Wait until storing the upload fits."""
        return self.reserve_bytes(self.storage_bytes(upload_bytes))

    @asynccontextmanager
    async def reserve_bytes(self, wanted: int) -> AsyncIterator[None]:
        """Wait until `wanted` bytes (at most the whole budget) are free, and hold them."""
        wanted = min(self.budget, wanted)
        async with self._changed:
            self._waiting += 1
            try:
                await self._changed.wait_for(lambda: self.free >= wanted)
            finally:
                self._waiting -= 1
            self.free -= wanted
        try:
            yield
        finally:
            await self._give_back(wanted)

    @asynccontextmanager
    async def reserve_if_free(self, upload_bytes: int) -> AsyncIterator[bool]:
        """Hold the storage share of an upload if it is free now; never waits.

        Yields whether it holds it. Refused when the share is more than the budget, and
        while others wait for theirs (they go first).
        """
        wanted = upload_bytes * COPIES_IN_MEMORY
        if wanted > self.free or self._waiting:
            yield False
            return
        self.free -= wanted
        try:
            yield True
        finally:
            await self._give_back(wanted)

    async def _give_back(self, held: int) -> None:
        async with self._changed:
            self.free += held
            self._changed.notify_all()
