"""A budget for upload bytes held in memory at once, shared by the uploads of a process.

An upload whose body declares its length takes, before its first byte is read, what
storing it costs (`storage_bytes`: its buffer and the driver's copy), if that much is
free soon, out of at most half the budget; it is then parsed straight into memory,
stored from there, and gives the share back once stored. Any other upload is spooled
to disk by Starlette while it holds only a parse share, then waits for its storage
share. Uploads beyond the budget wait their turn, so memory stays flat whatever the
concurrency (figures in docs/performance.md). Slow clients cannot hold more than half
the budget while their bytes trickle in, so spooled uploads always have the other
half; a spooled upload's two shares never overlap, so they cannot wait on each other.
The upload path that uses it is app/api/upload/.
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
        # Uploads received into memory hold their share while their bytes arrive, which
        # a slow client can make last minutes: they may hold at most this much, so the
        # rest always serves uploads received on disk (which hold only a parse share).
        self.receiving_budget = budget_bytes // 2
        self.receiving = 0
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
    async def reserve_within(self, upload_bytes: int, seconds: float) -> AsyncIterator[bool]:
        """Hold the storage share of an upload received into memory, if it is free
        within `seconds` (and within `receiving_budget`).

        Yields whether it holds it; a share larger than `receiving_budget` is refused at
        once. Those waiting for a share they need (`reserve_bytes`) go first.
        """
        wanted = upload_bytes * COPIES_IN_MEMORY
        held = False

        def fits() -> bool:
            return (
                self.free >= wanted
                and self.receiving + wanted <= self.receiving_budget
                and not self._waiting
            )

        if fits():  # the usual case: no lock, no timer
            self.free -= wanted
            self.receiving += wanted
            held = True
        elif wanted <= self.receiving_budget:
            async with self._changed:
                try:
                    async with asyncio.timeout(seconds):
                        await self._changed.wait_for(fits)
                    self.free -= wanted
                    self.receiving += wanted
                    held = True
                except TimeoutError:
                    pass
        try:
            yield held
        finally:
            if held:
                self.receiving -= wanted
                await self._give_back(wanted)

    async def _give_back(self, held: int) -> None:
        async with self._changed:
            self.free += held
            self._changed.notify_all()
