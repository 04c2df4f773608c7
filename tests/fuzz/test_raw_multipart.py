"""Hypothesis on raw multipart bodies and headers, beyond what the OpenAPI schema describes:
any charset, any bytes in names, filenames and values, repeated or missing parts, odd
headers. The answer is never a 5xx."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import URL

from app.main import create_app
from tests.conftest import make_settings

EXAMPLES = 300

CHARSETS = [
    "utf-7",
    "utf-8",
    "utf-7",
    "latin-1",
    "utf-16",
    "utf-32",
    "ascii",
    "cp1252",
    "no-such",
    "",
]
FIELD_NAMES = ["file", "title", "text_id", "user_id", "extra", ""]
odd_text = st.one_of(
    st.sampled_from(["+2AA-", "+2D3cAQ-", "\ud800", "\x00", "%ff", '"', "\\", "\r\n", "a;b=c"]),
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")),
)
header_bytes = st.binary(max_size=60).filter(lambda raw: b"\r" not in raw and b"\n" not in raw)


def quoted(value: bytes) -> bytes:
    return b'"' + value + b'"'


@st.composite
def parts(draw: st.DrawFn) -> bytes:
    name = draw(st.one_of(st.sampled_from(FIELD_NAMES), odd_text))
    disposition = b"Content-Disposition: form-data; name=" + quoted(name.encode("utf-8", "replace"))
    if draw(st.booleans()):
        filename = draw(
            st.one_of(odd_text.map(lambda t: t.encode("utf-8", "replace")), header_bytes)
        )
        disposition += b"; filename=" + quoted(filename)
    headers = [disposition]
    if draw(st.booleans()):
        headers.append(b"Content-Type: " + draw(header_bytes))
    if draw(st.booleans()):
        headers.append(draw(header_bytes) + b": " + draw(header_bytes))
    if name == "text_id" and draw(st.booleans()):
        content = str(uuid.uuid4()).encode()
    else:
        content = draw(
            st.one_of(st.binary(max_size=300), odd_text.map(lambda t: t.encode("utf-8", "replace")))
        )
    return b"\r\n".join(headers) + b"\r\n\r\n" + content


def encoded(text: str) -> bytes:
    return text.encode("utf-8", "replace")


@st.composite
def valid_looking_parts(draw: st.DrawFn) -> list[bytes]:
    """The four parts of a real upload, each one either as the app sends it or odd, so
    that odd values get past validation and reach the database."""
    title = draw(st.one_of(st.just("Stella"), odd_text))
    text_id = draw(st.one_of(st.just(str(uuid.uuid4())), odd_text))
    user_id = draw(st.one_of(st.just(str(uuid.uuid4())), odd_text))
    filename = draw(st.one_of(st.just(b"a.pcm"), odd_text.map(encoded), header_bytes))
    file_type = draw(st.one_of(st.just(b"application/octet-stream"), header_bytes))
    content = draw(st.one_of(st.just(b"\x01\x00" * 64), st.binary(max_size=200)))
    made = [
        b'Content-Disposition: form-data; name="title"\r\n\r\n' + encoded(title),
        b'Content-Disposition: form-data; name="text_id"\r\n\r\n' + encoded(text_id),
        b'Content-Disposition: form-data; name="user_id"\r\n\r\n' + encoded(user_id),
        b'Content-Disposition: form-data; name="file"; filename='
        + quoted(filename)
        + b"\r\nContent-Type: "
        + file_type
        + b"\r\n\r\n"
        + content,
    ]
    kept = draw(st.lists(st.sampled_from(range(4)), unique=True, min_size=2, max_size=4))
    return [made[index] for index in sorted(kept)] + draw(st.lists(parts(), max_size=3))


@st.composite
def uploads(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    boundary = draw(st.sampled_from(["xyz", "a" * 70, "--", "x y"]))
    marker = b"--" + boundary.encode()
    chosen = draw(st.one_of(valid_looking_parts(), st.lists(parts(), max_size=6)))
    body = b"".join(marker + b"\r\n" + part + b"\r\n" for part in chosen)
    if draw(st.integers(0, 9)) > 0:
        body += marker + b"--\r\n"
    if draw(st.integers(0, 9)) == 0:  # cut anywhere
        body = body[: draw(st.integers(0, len(body)))]
    content_type = f"multipart/form-data; boundary={boundary}"
    charset = draw(st.sampled_from(CHARSETS))
    if charset:
        content_type += f"; charset={charset}"
    headers = {"Content-Type": content_type}
    user = draw(
        st.one_of(st.just(str(uuid.uuid4())), odd_text.map(lambda t: encoded(t).decode("latin-1")))
    )
    headers["X-User-Id"] = user
    if draw(st.booleans()):
        headers["Idempotency-Key"] = encoded(draw(odd_text)).decode("latin-1")
    path = draw(st.sampled_from(["/tasks", "/transcribe"]))
    return path, body, headers


@pytest.fixture(scope="module")
def app(database_url: URL) -> FastAPI:
    return create_app(make_settings(max_upload_mb=1), database_url=database_url)


def test_no_raw_multipart_body_or_header_yields_a_5xx(app: FastAPI) -> None:
    async def run(cases: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, object]]:
        failures: list[tuple[int, object]] = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://tm") as client:
                for path, body, headers in cases:
                    clean = {
                        name.encode(): value.replace("\r", "").replace("\n", "").encode("latin-1")
                        for name, value in headers.items()
                    }
                    response = await client.post(path, content=body, headers=clean)
                    if response.status_code >= 500:
                        failures.append((response.status_code, (path, body[:400], clean)))
        return failures

    cases: list[tuple[str, bytes, dict[str, str]]] = []

    @given(case=uploads())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def collect(case: tuple[str, bytes, dict[str, str]]) -> None:
        cases.append(case)

    collect()
    failures = asyncio.run(run(cases))
    assert not failures, failures[:3]
