"""The trust boundary: whose X-User-Id is believed, one identity per request, nothing read
before the caller is judged, and whose word gives the client's address."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import URL

from app.api.trust import trust_warning
from app.config import Settings
from app.main import create_app
from tests.api.helpers import call_without_body
from tests.conftest import make_settings, serve

USER = uuid.uuid4()
OTHER = uuid.uuid4()
OUTSIDER = "203.0.113.9"  # a public address: outside the default trusted networks
SECRET = "a-test-secret-that-is-long-enough-for-hs256"
JSON = (b"content-type", b"application/json")
MIB = 1024 * 1024


@asynccontextmanager
async def calling_from(app: FastAPI, host: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(host, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://tm") as client:
        yield client


def bearer(user_id: uuid.UUID) -> dict[str, str]:
    claims = {"sub": str(user_id), "exp": 4_000_000_000}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, 'HS256')}"}


class TestTheDefaultBoundary:
    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "::1", "10.1.2.3", "172.20.0.5", "192.168.1.7", "fd00::7"]
    )
    def test_loopback_and_private_networks_are_trusted(self, host: str) -> None:
        assert Settings(_env_file=None).is_trusted_client(host)

    @pytest.mark.parametrize("host", [OUTSIDER, "172.32.0.1", "2001:db8::1", "", None])
    def test_anyone_else_is_not(self, host: str | None) -> None:
        assert not Settings(_env_file=None).is_trusted_client(host)

    def test_trusting_everyone_is_an_explicit_star(self) -> None:
        settings = Settings(_env_file=None, trusted_clients="*")
        assert settings.trusts_everyone
        assert settings.is_trusted_client(OUTSIDER)

    async def test_an_outsider_naming_a_user_is_refused_everywhere(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        as_user = {"X-User-Id": str(USER)}
        task = uuid.uuid4()
        async with calling_from(app, OUTSIDER) as outsider:
            responses = [
                await outsider.get("/tasks", headers=as_user),
                await outsider.get(f"/tasks/{task}", headers=as_user),
                await outsider.delete(f"/tasks/{task}", headers=as_user),
                await outsider.get(f"/tasks/{task}/events?user_id={USER}"),
                await outsider.post("/", json={"user_id": str(USER)}),
                await outsider.post(f"/{task}", json={"user_id": str(USER)}),
            ]
        assert [response.status_code for response in responses] == [403] * len(responses)
        # The same calls from the gateway's network are served.
        assert (await client.get("/tasks", headers=as_user)).status_code == 200
        assert (await client.post("/", json={"user_id": str(USER)})).status_code == 200

    async def test_an_outsider_s_upload_header_is_refused_not_parsed(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        headers = [
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            (b"x-user-id", b"not-a-uuid"),
        ]
        status, reads = await call_without_body(app, "/tasks", headers, client_host=OUTSIDER)
        assert (status, reads) == (403, 0)

    async def test_an_outsider_is_served_when_everyone_is_trusted(
        self, database_url: URL, clean_database: None
    ) -> None:
        app = create_app(make_settings(trusted_clients="*"), database_url=database_url)
        async with serve(app), calling_from(app, OUTSIDER) as outsider:
            response = await outsider.get("/tasks", headers={"X-User-Id": str(USER)})
        assert response.status_code == 200


class TestWithTokens:
    @pytest.fixture
    def settings(self) -> Settings:
        return make_settings(auth_jwt_secret=SECRET)

    async def test_the_token_decides_from_any_address(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        async with calling_from(app, OUTSIDER) as outsider:
            without = await outsider.get("/tasks", headers={"X-User-Id": str(USER)})
            with_token = await outsider.get("/tasks", headers=bearer(USER))
            legacy = await outsider.post("/", json={"user_id": str(USER)}, headers=bearer(USER))
        assert without.status_code == 401
        assert with_token.status_code == 200
        assert legacy.status_code == 403  # the body names the user: the gateway's only

    async def test_a_query_user_id_naming_another_user_is_403(
        self, client: httpx.AsyncClient
    ) -> None:
        task = uuid.uuid4()
        other = await client.get(f"/tasks/{task}/events?user_id={OTHER}", headers=bearer(USER))
        same = await client.get(f"/tasks/{task}/events?user_id={USER}", headers=bearer(USER))
        assert other.status_code == 403
        assert same.status_code == 404  # past the identity check: no such task


class TestOneIdentity:
    async def test_a_query_user_id_cannot_override_the_gateway_s_header(
        self, client: httpx.AsyncClient
    ) -> None:
        task = uuid.uuid4()
        headers = {"X-User-Id": str(OTHER)}
        other = await client.get(f"/tasks/{task}/events?user_id={USER}", headers=headers)
        same = await client.get(f"/tasks/{task}/events?user_id={OTHER}", headers=headers)
        alone = await client.get(f"/tasks/{task}/events?user_id={USER}")  # EventSource
        assert other.status_code == 403
        assert (same.status_code, alone.status_code) == (404, 404)

    async def test_a_repeated_x_user_id_is_400(self, client: httpx.AsyncClient) -> None:
        headers = [("X-User-Id", str(USER)), ("X-User-Id", str(OTHER))]
        listed = await client.get("/tasks", headers=headers)
        followed = await client.get(f"/tasks/{uuid.uuid4()}/events", headers=headers)
        assert (listed.status_code, followed.status_code) == (400, 400)

    async def test_a_repeated_x_user_id_on_an_upload_is_400_before_its_body_is_read(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        headers = [
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            (b"x-user-id", str(USER).encode()),
            (b"x-user-id", str(OTHER).encode()),
        ]
        assert await call_without_body(app, "/tasks", headers) == (400, 0)


class TestNothingReadBeforeJudging:
    @pytest.mark.parametrize("path", ["/", f"/{uuid.uuid4()}", f"/{uuid.uuid4()}/stream"])
    async def test_an_outsider_s_24_mib_json_body_is_not_read(
        self, app: FastAPI, client: httpx.AsyncClient, path: str
    ) -> None:
        status, reads = await call_without_body(
            app, path, [JSON], client_host=OUTSIDER, content_length=24 * MIB
        )
        assert (status, reads) == (403, 0)

    async def test_an_outsider_s_upload_naming_a_user_is_not_read(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        headers = [
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            (b"x-user-id", str(USER).encode()),
        ]
        status, reads = await call_without_body(
            app, "/tasks", headers, client_host=OUTSIDER, content_length=24 * MIB
        )
        assert (status, reads) == (403, 0)

    @pytest.mark.parametrize("path", ["/", f"/{uuid.uuid4()}/stream"])
    async def test_a_declared_json_body_over_the_cap_is_413_unread(
        self, app: FastAPI, client: httpx.AsyncClient, path: str
    ) -> None:
        status, reads = await call_without_body(app, path, [JSON], content_length=64 * 1024 + 1)
        assert (status, reads) == (413, 0)

    async def test_an_undeclared_json_body_is_cut_off_where_it_crosses_the_cap(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        status, reads = await call_without_body(app, "/", [JSON], content_length=None)
        assert status == 413
        assert reads == 65  # 1 KiB chunks: the one that crossed 64 KiB, and no more

    async def test_a_json_body_under_the_cap_is_served(self, client: httpx.AsyncClient) -> None:
        body = {"user_id": str(USER), "padding": "x" * 60_000}
        assert (await client.post("/", json=body)).status_code == 200

    async def test_a_body_that_says_it_is_not_json_is_415_unread(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        headers = [(b"content-type", b"text/plain")]
        assert await call_without_body(app, "/", headers, content_length=100) == (415, 0)


class TestSmallerCap:
    @pytest.fixture
    def settings(self) -> Settings:
        return make_settings(json_body_max_kb=1)

    async def test_the_cap_is_a_setting(self, client: httpx.AsyncClient) -> None:
        body = {"user_id": str(USER), "padding": "x" * 2048}
        assert (await client.post("/", json=body)).status_code == 413


class TestClientAddress:
    async def test_forwarded_headers_are_ignored_by_default(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        claims = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1"}
        async with calling_from(app, OUTSIDER) as outsider:
            response = await outsider.get("/tasks", headers={"X-User-Id": str(USER), **claims})
        assert response.status_code == 403

    async def test_x_forwarded_for_is_believed_from_the_named_proxies_only(
        self, database_url: URL, clean_database: None
    ) -> None:
        settings = make_settings(forwarded_allow_ips="10.9.9.9")
        app = create_app(settings, database_url=database_url)
        as_user = {"X-User-Id": str(USER)}
        async with serve(app):
            async with calling_from(app, "10.9.9.9") as proxy:
                outsider_via_proxy = await proxy.get(
                    "/tasks", headers={**as_user, "X-Forwarded-For": OUTSIDER}
                )
                gateway_via_proxy = await proxy.get(
                    "/tasks", headers={**as_user, "X-Forwarded-For": "10.1.1.1"}
                )
            async with calling_from(app, OUTSIDER) as outsider:
                claiming = await outsider.get(
                    "/tasks", headers={**as_user, "X-Forwarded-For": "127.0.0.1"}
                )
        assert outsider_via_proxy.status_code == 403
        assert gateway_via_proxy.status_code == 200
        assert claiming.status_code == 403

    def test_uvicorn_is_run_without_its_own_proxy_handling(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """uvicorn's default believes X-Forwarded-For from 127.0.0.1."""
        import start

        calls: list[dict[str, Any]] = []
        monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
        monkeypatch.setattr(start, "configure_logging", lambda **kwargs: None)
        for name in ("MANAGER_DB_POSTGRES_HOST", "MANAGER_FORWARDED_ALLOW_IPS"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MANAGER_SANDBOX_SERVICES", "true")
        monkeypatch.setenv("MANAGER_DB_EMBEDDED", "true")

        assert start.main() == 0
        assert calls[0]["proxy_headers"] is False


class TestStartUpWarning:
    def test_one_warning_names_each_way_of_trusting_everyone(self) -> None:
        assert trust_warning(make_settings()) is None
        assert trust_warning(make_settings(forwarded_allow_ips="10.9.9.9")) is None
        everyone = trust_warning(make_settings(trusted_clients="*", forwarded_allow_ips="*"))
        assert everyone is not None
        assert "MANAGER_TRUSTED_CLIENTS=*" in everyone
        assert "MANAGER_FORWARDED_ALLOW_IPS=*" in everyone

    @pytest.mark.parametrize(("trusted", "warnings"), [("*", 1), (None, 0)])
    async def test_the_lifespan_logs_it_once(
        self,
        database_url: URL,
        clean_database: None,
        caplog: pytest.LogCaptureFixture,
        trusted: str | None,
        warnings: int,
    ) -> None:
        overrides = {} if trusted is None else {"trusted_clients": trusted}
        app = create_app(make_settings(**overrides), database_url=database_url)
        with caplog.at_level(logging.WARNING):
            async with serve(app) as client:
                await client.get("/health")
        found = [r for r in caplog.records if "trusts everyone" in r.getMessage()]
        assert len(found) == warnings
        assert all(record.levelno == logging.WARNING for record in found)
