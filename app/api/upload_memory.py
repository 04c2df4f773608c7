"""A budget for upload bytes held in memory at once.

Starlette spools each upload to disk past 1 MB, but storing it means holding it in
memory (the bytes, then the driver's copy). Sixteen concurrent 5 MB uploads would need
a few hundred MB at the same moment; with the budget, uploads beyond it wait their
turn, already spooled, and memory stays flat whatever the concurrency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# The bytes read, and the database driver's encoded copy of them.
COPIES_IN_MEMORY = 2


class UploadMemory:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.free = budget_bytes
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, upload_bytes: int) -> AsyncIterator[None]:
        """Wait until the upload fits (one larger than the whole budget waits for all)."""
        wanted = min(self.budget, upload_bytes * COPIES_IN_MEMORY)
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= wanted)
            self.free -= wanted
        try:
            yield
        finally:
            async with self._changed:
                self.free += wanted
                self._changed.notify_all()
