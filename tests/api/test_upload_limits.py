"""Uploads are judged on their headers before their body is read, and parsed within caps."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.api.helpers import PCM_SAMPLE, call_without_body
from tests.conftest import count_rows, make_settings

USER = str(uuid.uuid4())
MULTIPART = b"multipart/form-data; boundary=xyz"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"content-type", MULTIPART)], 401),  # nobody named
        ([(b"content-type", MULTIPART), (b"x-user-id", b"nope")], 422),
        ([(b"content-type", b"text/plain"), (b"x-user-id", USER.encode())], 415),
        ([(b"content-type", b"application/x-www-form-urlencoded"),
          (b"x-user-id", USER.encode())], 415),
    ],
)  # fmt: skip
async def test_an_upload_is_refused_on_its_headers_before_its_body_is_read(
    app: FastAPI, client: httpx.AsyncClient, headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    status, reads = await call_without_body(app, "/tasks", headers)

    assert status == expected
    assert reads == 0


async def test_an_upload_with_a_refused_token_is_401_before_its_body_is_read(
    database_url: Any, clean_database: None
) -> None:
    from app.main import create_app
    from tests.conftest import serve

    app = create_app(
        make_settings(auth_jwt_secret="a-test-secret-that-is-long-enough-for-hs256"),
        database_url=database_url,
    )
    async with serve(app):
        headers = [(b"content-type", MULTIPART), (b"authorization", b"Bearer nope")]
        status, reads = await call_without_body(app, "/tasks", headers)

    assert (status, reads) == (401, 0)


def form_body(parts: list[tuple[str, bytes]]) -> bytes:
    chunks = [
        f'--xyz\r\nContent-Disposition: form-data; name="{name}"'.encode()
        + (b'; filename="a.pcm"' if name == "file" else b"")
        + b"\r\n\r\n"
        + value
        + b"\r\n"
        for name, value in parts
    ]
    return b"".join(chunks) + b"--xyz--\r\n"


GOOD_PARTS = [("title", b"Stella"), ("text_id", str(uuid.uuid4()).encode()), ("file", PCM_SAMPLE)]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([("title", b"x" * (64 * 1024)), *GOOD_PARTS[1:]], "maximum size"),
        ([*GOOD_PARTS, *[(f"extra{n}", b"x") for n in range(20)]], "Too many fields"),
        ([*GOOD_PARTS, ("file", PCM_SAMPLE)], "Too many files"),
    ],
)
async def test_a_form_over_its_part_caps_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, parts: list[tuple[str, bytes]], message: str
) -> None:
    response = await client.post(
        "/tasks",
        content=form_body(parts),
        headers={"Content-Type": MULTIPART.decode(), "X-User-Id": USER},
    )

    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert await count_rows(engine, "tasks") == 0


async def test_a_field_named_file_that_is_not_a_file_is_422(client: httpx.AsyncClient) -> None:
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a file\r\n'
        + form_body(GOOD_PARTS[:2])
    )
    response = await client.post(
        "/tasks", content=body, headers={"Content-Type": MULTIPART.decode(), "X-User-Id": USER}
    )
    assert response.status_code == 422, response.text


class TestTrustedClients:
    @pytest.fixture
    def settings(self) -> Settings:
        return make_settings(trusted_clients="10.0.0.0/8, 192.168.1.7")

    @pytest.mark.parametrize(
        "path", ["/transcribe", "/", f"/{uuid.uuid4()}", f"/{uuid.uuid4()}/stream"]
    )
    async def test_legacy_routes_refuse_other_addresses_before_reading(
        self, app: FastAPI, client: httpx.AsyncClient, path: str
    ) -> None:
        headers = [(b"content-type", MULTIPART if path == "/transcribe" else b"application/json")]
        status, reads = await call_without_body(app, path, headers, client_host="172.16.0.1")
        assert (status, reads) == (403, 0)

    async def test_the_gateway_s_address_is_served(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        # httpx's ASGI transport calls from 127.0.0.1, outside the list: refused.
        assert (await client.post("/", json={"user_id": USER})).status_code == 403
        gateway = httpx.ASGITransport(app=app, client=("192.168.1.7", 4000))
        async with httpx.AsyncClient(transport=gateway, base_url="http://tm") as from_gateway:
            assert (await from_gateway.post("/", json={"user_id": USER})).status_code == 200
            inside = httpx.ASGITransport(app=app, client=("10.20.30.40", 4000))
        async with httpx.AsyncClient(transport=inside, base_url="http://tm") as from_network:
            assert (await from_network.post("/", json={"user_id": USER})).status_code == 200

    async def test_resource_routes_believe_x_user_id_from_the_list_only(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        assert (await client.get("/tasks", headers={"X-User-Id": USER})).status_code == 403
        gateway = httpx.ASGITransport(app=app, client=("192.168.1.7", 4000))
        async with httpx.AsyncClient(transport=gateway, base_url="http://tm") as from_gateway:
            response = await from_gateway.get("/tasks", headers={"X-User-Id": USER})
        assert response.status_code == 200


def test_trusted_clients_come_from_a_shared_env_file_as_a_comma_separated_list(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ILPS's .env also holds other services' variables; they are ignored."""
    env = tmp_path / ".env"
    env.write_text(
        "MANAGER_TRUSTED_CLIENTS=10.0.0.0/8, 2001:db8::/32,192.168.1.7\n"
        "TRANSCRIBER_MODEL_PATH=/models/x\n"
        "GATEWAY_TRUSTED_CLIENTS=[1, 2]\n"
        "MANAGER_AUTH_JWT_AUDIENCE=task-manager\n"
    )
    for name in ("MANAGER_TRUSTED_CLIENTS", "MANAGER_AUTH_JWT_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings(_env_file=env)

    assert [str(network) for network in settings.trusted_clients or []] == [
        "10.0.0.0/8", "2001:db8::/32", "192.168.1.7/32",
    ]  # fmt: skip
    assert settings.auth_jwt_audience == "task-manager"
    assert settings.is_trusted_client("10.1.2.3")
    assert settings.is_trusted_client("::ffff:10.1.2.3")
    assert not settings.is_trusted_client("127.0.0.1")
    unset = Settings(_env_file=None)  # loopback and the private ranges
    assert unset.is_trusted_client("172.20.0.5")
    assert not unset.is_trusted_client("203.0.113.9")
