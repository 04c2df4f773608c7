"""A multipart/form-data body parsed as it streams in, file parts straight into memory.

python-multipart's streaming parser calls back with slices of each chunk; a file part's
slices are copied once into its `PartBuffer`, preallocated from the body's declared
length, and text parts are gathered under their cap. Everything a client can observe
is Starlette's (`starlette.formparsers.MultiPartParser`, which FastAPI otherwise uses):
the same `FormData` of strings and `UploadFile`s, decoded with the same charset rules,
and the same 400 messages for malformed bodies and parts over their caps; the tests
compare the two parsers on the same bodies (tests/unit/test_multipart_form.py). Only
where a file's bytes go differs: Starlette spools them to a temporary file, written
and read back through a worker thread per chunk.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile

from app.api.upload.part_buffer import PartBuffer


class MultipartFormError(Exception):
    """A body the form cannot be read from; `message` is Starlette's wording (a 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PartCaps:
    """How many parts of each kind a form may have, and how large a text part may be."""

    max_files: int
    max_fields: int
    max_text_bytes: int


@dataclass
class _Part:
    disposition: bytes | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    name: str = ""
    text: bytearray = field(default_factory=bytearray)
    file: UploadFile | None = None
    buffer: PartBuffer | None = None


def decode(raw: bytes | bytearray, charset: str) -> str:
    """A field's bytes as text in the form's charset, or Latin-1 if they are not."""
    try:
        return raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return raw.decode("latin-1")


def form_charset(params: dict[bytes, bytes]) -> str:
    """The charset named in the Content-Type (UTF-8 if none, Latin-1 if unknown)."""
    named = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        return codecs.lookup(named).name
    except LookupError:
        return "latin-1"


class BufferedFormParser:
    """One form's parse: feed it the body's chunks, get its `FormData`.

    `body_length` is the body's declared length: a file part's buffer is allocated with
    what is left of it when the part's data begins, an upper bound of the part's size.
    """

    def __init__(self, content_type: str, caps: PartCaps, *, body_length: int) -> None:
        _, params = parse_options_header(content_type)
        self.charset = form_charset(params)
        try:
            self.boundary = params[b"boundary"]
        except KeyError:
            raise MultipartFormError("Missing boundary in multipart.") from None
        self.caps = caps
        self.body_length = body_length
        self.items: list[tuple[str, str | UploadFile]] = []
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._files = 0
        self._fields = 0
        self._fed = 0  # body bytes fed to the parser before the current chunk

    async def parse(self, chunks: AsyncIterator[bytes]) -> FormData:
        callbacks = {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        }
        try:
            parser = MultipartParser(self.boundary, callbacks)  # type: ignore[arg-type]
            async for chunk in chunks:
                parser.write(chunk)
                self._fed += len(chunk)
            parser.finalize()
        except BaseException as error:
            self._close_files()
            if isinstance(error, FormParserError):
                raise MultipartFormError("Invalid multipart data.") from error
            raise
        return FormData(self.items)

    # ------------------------------------------------------------ parser callbacks

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.buffer is not None:
            part.buffer.write(memoryview(data)[start:end])
            return
        if len(part.text) + (end - start) > self.caps.max_text_bytes:
            raise MultipartFormError(
                f"Part exceeded maximum size of {int(self.caps.max_text_bytes / 1024)}KB."
            )
        part.text += memoryview(data)[start:end]

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is None:
            self.items.append((part.name, decode(part.text, self.charset)))
            return
        assert part.buffer is not None
        part.file.size = part.buffer.size
        self.items.append((part.name, part.file))

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += memoryview(data)[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += memoryview(data)[start:end]

    def _on_header_end(self) -> None:
        name, value = bytes(self._header_name).lower(), bytes(self._header_value)
        if name == b"content-disposition":
            self._part.disposition = value
        self._part.headers.append((name, value))
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self._part
        _, options = parse_options_header(part.disposition)
        try:
            part.name = decode(options[b"name"], self.charset)
        except KeyError:
            raise MultipartFormError(
                'The Content-Disposition header field "name" must be provided.'
            ) from None
        if b"filename" not in options:
            self._fields += 1
            if self._fields > self.caps.max_fields:
                raise MultipartFormError(
                    f"Too many fields. Maximum number of fields is {self.caps.max_fields}."
                )
            return
        self._files += 1
        if self._files > self.caps.max_files:
            raise MultipartFormError(
                f"Too many files. Maximum number of files is {self.caps.max_files}."
            )
        part.buffer = PartBuffer(self.body_length - self._fed)
        part.file = UploadFile(
            file=part.buffer,  # type: ignore[arg-type]  # file-like, as Starlette's spool
            size=0,
            filename=decode(options[b"filename"], self.charset),
            headers=Headers(raw=part.headers),
        )

    def _close_files(self) -> None:
        for _, value in self.items:
            if isinstance(value, UploadFile):
                value.file.close()
        if self._part.buffer is not None:
            self._part.buffer.close()
