"""A file part held in one preallocated buffer, handed to the database driver as a view.

Each byte of the part is copied into the buffer once, as it is parsed; the insert then
passes `view()` to the driver, which encodes it straight from there. No temporary
file, no thread, no `bytes` copy in between (see docs/performance.md, "Copies per
megabyte, upload side").
"""

from __future__ import annotations

import os

from starlette.datastructures import UploadFile

from app.compat import served_inline


# Its methods never block, so `UploadFile` need not hand them to a worker thread.
@served_inline
class PartBuffer:
    """The file-like object behind an `UploadFile` whose bytes stay in memory.

    `capacity` is an upper bound of the part's size (what is left of the body's declared
    length), so the buffer is allocated once and never grows; a part larger than the
    bound (which HTTP framing rules out) still fits, at the cost of one more copy.
    """

    def __init__(self, capacity: int) -> None:
        self._data = bytearray(max(capacity, 0))
        self._size = 0
        self._position = 0
        self.closed = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes | memoryview) -> int:
        """Append `chunk` (writes always append: the parser is the only writer)."""
        end = self._size + len(chunk)
        if end > len(self._data):
            grown = bytearray(max(end, 2 * len(self._data)))
            grown[: self._size] = memoryview(self._data)[: self._size]
            self._data = grown
        self._data[self._size : end] = chunk
        self._size = end
        return len(chunk)

    def view(self) -> memoryview:
        """The part's bytes, without a copy (valid until `close`)."""
        return memoryview(self._data)[: self._size]

    def read(self, size: int = -1) -> bytes:
        """A copy of the next `size` bytes (the `UploadFile` API; the service uses `view`)."""
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        chunk = bytes(memoryview(self._data)[self._position : end])
        self._position = max(self._position, end)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        """Drop the bytes (a view still held elsewhere keeps them alive until released)."""
        self._data = bytearray()
        self._size = self._position = 0
        self.closed = True


def buffered_part(upload: UploadFile) -> PartBuffer | None:
    """The upload's `PartBuffer`, or None when it was spooled to a temporary file."""
    return upload.file if isinstance(upload.file, PartBuffer) else None
