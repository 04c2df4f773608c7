"""The parser that reads a form into memory answers exactly as Starlette's would.

Every body is parsed by both, fed in chunks of every size (so boundaries, headers and
CRLFs fall across chunk edges), and the outcomes compared: the same fields and files in
the same order, or the same 400 message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.upload.form_parser import BufferedFormParser, MultipartFormError
from app.api.upload.limits import UPLOAD_FORM_LIMITS, UPLOAD_PART_CAPS
from app.api.upload.part_buffer import PartBuffer, buffered_part
from tests.fuzz.test_raw_multipart import uploads

CONTENT_TYPE = "multipart/form-data; boundary=xyz"


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


async def stream(chunks: list[bytes]) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        yield chunk
    yield b""  # as Request.stream() ends


async def describe(form: Any) -> list[tuple[str, Any]]:
    described: list[tuple[str, Any]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            await value.seek(0)
            content = await value.read()
            described.append(
                (name, ("file", value.filename, value.size, list(value.headers.raw), content))
            )
        else:
            described.append((name, value))
    return described


async def starlette_outcome(content_type: str, chunks: list[bytes]) -> Any:
    parser = MultiPartParser(
        Headers({"content-type": content_type}), stream(chunks), **UPLOAD_FORM_LIMITS
    )
    try:
        return await describe(await parser.parse())
    except MultiPartException as error:
        return ("400", error.message)


async def buffered_outcome(content_type: str, chunks: list[bytes]) -> Any:
    try:
        parser = BufferedFormParser(
            content_type, UPLOAD_PART_CAPS, body_length=sum(map(len, chunks))
        )
        return await describe(await parser.parse(stream(chunks)))
    except MultipartFormError as error:
        return ("400", error.message)


def assert_same(content_type: str, body: bytes, chunk_size: int) -> None:
    chunks = chunked(body, chunk_size)
    expected = asyncio.run(starlette_outcome(content_type, chunks))
    actual = asyncio.run(buffered_outcome(content_type, chunks))
    assert actual == expected


def form(*parts: tuple[bytes, bytes], boundary: bytes = b"xyz") -> bytes:
    """A body from (headers, content) pairs."""
    body = b"".join(
        b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n"
        for head, content in parts
    )
    return body + b"--" + boundary + b"--\r\n"


def text_part(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name + b'"', value


def file_part(content: bytes, filename: bytes = b"a.pcm") -> tuple[bytes, bytes]:
    return (
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream",
        content,
    )


AUDIO = bytes(range(256)) * 40 + b"\r\n--xy\r\n--x"  # near-boundaries inside the data
UPLOAD = form(
    text_part(b"title", b"Stella"),
    text_part(b"text_id", str(uuid.uuid4()).encode()),
    file_part(AUDIO),
)


def test_a_boundary_split_at_any_byte_is_parsed_alike() -> None:
    for chunk_size in (1, 2, 3, 5, 7, 64, 1000, len(UPLOAD)):
        assert_same(CONTENT_TYPE, UPLOAD, chunk_size)


def test_every_split_into_two_chunks_keeps_the_file_intact() -> None:
    for cut in range(len(UPLOAD) + 1):
        chunks = [UPLOAD[:cut], UPLOAD[cut:]]
        parser = BufferedFormParser(CONTENT_TYPE, UPLOAD_PART_CAPS, body_length=len(UPLOAD))
        parsed = asyncio.run(parser.parse(stream(chunks)))
        file = parsed["file"]
        assert isinstance(file, UploadFile)
        buffer = buffered_part(file)
        assert buffer is not None
        assert bytes(buffer.view()) == AUDIO


@pytest.mark.parametrize(
    "parts",
    [
        [file_part(AUDIO), text_part(b"title", b"Stella"), text_part(b"text_id", b"x")],
        [text_part(b"title", b"Stella"), file_part(AUDIO), text_part(b"user_id", b"u")],
        [text_part(b"callback_url", b"http://x/"), file_part(b""), text_part(b"title", b"")],
    ],
)
def test_parts_in_any_order_are_parsed_alike(parts: list[tuple[bytes, bytes]]) -> None:
    assert_same(CONTENT_TYPE, form(*parts), 100)


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [
        (CONTENT_TYPE, "ünïcødé – 録音.pcm".encode()),
        (CONTENT_TYPE + "; charset=latin-1", "été.pcm".encode("latin-1")),
        (CONTENT_TYPE + "; charset=utf-7", b"+2AA-a.pcm"),
        (CONTENT_TYPE + "; charset=no-such", "ß.pcm".encode()),
        (CONTENT_TYPE, b"C:\\Users\\me\\take 1.pcm"),
        (CONTENT_TYPE, b"\xff\xfe.pcm"),
    ],
)
def test_non_ascii_filenames_decode_alike(content_type: str, filename: bytes) -> None:
    assert_same(content_type, form(text_part(b"title", b"t"), file_part(AUDIO, filename)), 9)


@pytest.mark.parametrize(
    "body",
    [
        form(text_part(b"title", b"x" * (8 * 1024 + 1))),  # a text part over its cap
        form(text_part(b"title", b"x" * (8 * 1024))),  # at its cap
        form(*[text_part(b"f%d" % n, b"v") for n in range(9)]),  # too many fields
        form(file_part(b"a"), file_part(b"b")),  # too many files
        form((b"Content-Disposition: form-data", b"no name")),
        form((b"Content-Type: text/plain", b"no disposition")),
        b"--xyz\r\nno colon in this header\r\n\r\nx\r\n--xyz--\r\n",  # malformed
        UPLOAD[: len(UPLOAD) // 2],  # cut in the file
        b"",
    ],
)
def test_caps_and_malformed_bodies_give_the_same_answer(body: bytes) -> None:
    for chunk_size in (1, 13, 4096):
        assert_same(CONTENT_TYPE, body, chunk_size)


def test_a_content_type_without_a_boundary_is_the_same_400() -> None:
    assert_same("multipart/form-data", UPLOAD, 100)
    assert asyncio.run(buffered_outcome("multipart/form-data", [UPLOAD])) == (
        "400",
        "Missing boundary in multipart.",
    )


@given(case=uploads(), chunk_size=st.integers(1, 600))
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_fuzzed_bodies_are_parsed_alike(
    case: tuple[str, bytes, dict[str, str]], chunk_size: int
) -> None:
    _, body, headers = case
    assert_same(headers["Content-Type"], body, chunk_size)


def test_the_file_buffer_is_allocated_once_from_the_declared_length() -> None:
    parser = BufferedFormParser(CONTENT_TYPE, UPLOAD_PART_CAPS, body_length=len(UPLOAD))
    parsed = asyncio.run(parser.parse(stream(chunked(UPLOAD, 512))))
    file = parsed["file"]
    assert isinstance(file, UploadFile)
    buffer = buffered_part(file)
    assert buffer is not None
    assert buffer.size == file.size == len(AUDIO)
    assert len(buffer._data) <= len(UPLOAD)  # never grew past the declared length
    view = buffer.view()
    assert view.obj is buffer._data  # a view of the buffer, not a copy


def test_a_buffer_smaller_than_its_part_still_holds_every_byte() -> None:
    buffer = PartBuffer(3)
    for piece in (b"ab", b"cdef", memoryview(b"ghij")[1:]):
        buffer.write(piece)
    assert bytes(buffer.view()) == b"abcdefhij"
    assert buffer.read(4) == b"abcd"
    assert buffer.read() == b"efhij"
    buffer.seek(0)
    assert buffer.read(2) == b"ab"
    buffer.close()
    assert buffer.size == 0
