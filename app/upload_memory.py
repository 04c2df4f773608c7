"""A budget for upload bytes held in memory at once.

Two phases of an upload take from it. Parsing: a form being received holds up to
1 MiB of its file (Starlette spools the rest to disk) and its capped text fields, so
it reserves that much (or its Content-Length, if smaller) before its first byte is
read. Storing: the bytes, then the driver's copy. Sixteen concurrent 5 MB uploads would
need a few hundred MB at the same moment; with the budget, uploads beyond it wait
their turn (unread, or spooled to disk) and memory stays flat whatever the concurrency.
The two reservations of one upload never overlap, so they cannot wait on each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

# The bytes read, and the database driver's encoded copy of them.
COPIES_IN_MEMORY = 2


class UploadMemory:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.free = budget_bytes
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
            await self._changed.wait_for(lambda: self.free >= wanted)
            self.free -= wanted
        try:
            yield
        finally:
            async with self._changed:
                self.free += wanted
                self._changed.notify_all()
