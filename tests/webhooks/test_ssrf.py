"""The callback URL policy: refused at creation, and again at send time (DNS may change)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, ip_address

import httpx
import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.webhooks.policy import CallbackPolicy, CallbackRefused, IPAddress
from tests.conftest import serve
from tests.waiting import eventually
from tests.webhooks.conftest import (
    create_task,
    create_with_callback,
    deliveries,
    finish,
    wait_states,
    webhook_settings,
)

PUBLIC = ip_address("93.184.215.14")


class FakeDns:
    """Names resolve to what the test says; anything else does not resolve."""

    def __init__(self) -> None:
        self.names: dict[str, list[IPAddress]] = {
            "hooks.example.org": [PUBLIC],
            "internal.example.org": [ip_address("10.1.2.3")],
            "mixed.example.org": [PUBLIC, ip_address("192.168.0.9")],
            "sixtofour.example.org": [ip_address("2002:a00:1::1")],
            "nat64.example.org": [ip_address("64:ff9b::5db8:d70e")],
        }
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"{host} does not resolve")
        return self.names[host]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://internal.example.org/hook",  # resolves to 10.x
        "https://mixed.example.org/hook",  # one private address among public ones
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://[2002:a9fe:a9fe::1]/hook",  # 6to4 around 169.254.169.254
        "https://[2002:7f00:1::]/hook",  # 6to4 around 127.0.0.1
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
        "https://[2001:0:4136:e378:8000:63bf:5601:5601]/hook",  # Teredo, client 169.254.169.254
        "https://[fec0::1]/hook",  # site-local
        "https://100.64.0.1/hook",  # shared address space (CGNAT)
        "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "https://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
        "https://[64:ff9b:1::a00:1]/hook",  # local-use NAT64
        "https://[::ffff:a9fe:a9fe]/hook",  # IPv4-mapped 169.254.169.254
        "https://[::a9fe:a9fe]/hook",  # IPv4-compatible 169.254.169.254
        "https://[::5db8:d70e]/hook",  # IPv4-compatible, deprecated even when public
        "https://sixtofour.example.org/hook",  # a name resolving to 6to4 of 10.0.0.1
        "https://unknown.example.org/hook",
        "http://hooks.example.org/hook",  # http on a host nobody allowed
        "https://user:secret@hooks.example.org/hook",
        "ftp://hooks.example.org/hook",
        "hooks.example.org/hook",
        "https://hooks.example.org/" + "x" * 2048,
    ],
)
async def test_refused_urls(url: str) -> None:
    policy = CallbackPolicy([], FakeDns())
    with pytest.raises(CallbackRefused):
        await policy.check(url)


@pytest.mark.parametrize(
    "url",
    ["https://localhost/", "https://2130706433/", "https://0x7f000001/", "https://127.1/"],
)
async def test_other_spellings_of_loopback_are_refused_by_what_they_resolve_to(url: str) -> None:
    """The system resolver turns decimal, hex and short forms into 127.0.0.1; the policy
    judges the addresses, never the spelling."""
    with pytest.raises(CallbackRefused):
        await CallbackPolicy([]).check(url)


async def test_allowed_urls() -> None:
    dns = FakeDns()
    policy = CallbackPolicy(["internal.example.org", "127.0.0.1"], dns)
    assert (
        await policy.check("https://hooks.example.org/h?x=1") == "https://hooks.example.org/h?x=1"
    )
    # Named by the operator: http, and private or loopback addresses, are fine.
    assert await policy.check("http://internal.example.org:8080/h")
    assert await policy.check("http://127.0.0.1:9/h")
    assert await policy.check("https://INTERNAL.example.org./h")
    # Addresses that only carry a public IPv4 address are as public as it is.
    assert await policy.check("https://nat64.example.org/h")  # DNS64 on an IPv6-only network
    assert await policy.check("https://[2002:5db8:d70e::1]/h")  # 6to4 of 93.184.215.14
    assert await policy.check("https://[::ffff:5db8:d70e]/h")
    # Teredo with a public server and client (93.184.215.14, obfuscated).
    assert await policy.check("https://[2001:0:4136:e378:8000:63bf:a247:28f1]/h")


async def test_an_allowed_host_with_a_port_allows_that_port_only() -> None:
    policy = CallbackPolicy(["internal.example.org:8443", "10.0.0.7", "[::1]:9000"], FakeDns())
    assert await policy.check("https://internal.example.org:8443/h")
    assert await policy.check("http://internal.example.org:8443/h")
    for url in (
        "https://internal.example.org/h",  # 443
        "http://internal.example.org:8080/h",
        "https://[::1]:9001/h",
    ):
        with pytest.raises(CallbackRefused):
            await policy.check(url)
    assert await policy.check("http://10.0.0.7:1234/h")  # no port named: any port
    assert await policy.check("http://[::1]:9000/h")
    # The send-time check of the transport judges the same host and port.
    assert await policy.addresses("internal.example.org", 8443)
    with pytest.raises(CallbackRefused):
        await policy.addresses("internal.example.org", 443)


@pytest.mark.parametrize("entry", ["host:", "host:http", "host:70000", "[::1]x", ":80"])
def test_a_malformed_allowed_host_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"port|host"):
        CallbackPolicy([entry], FakeDns())


async def test_creation_refuses_with_a_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    # 127.0.0.1 is allowed for the tests' receiver; the rest of loopback is not.
    for url in (
        "https://127.0.0.2/hook",
        "https://localhost/hook",  # the system resolver: loopback
        "https://169.254.169.254/",
        "http://example.org/",
    ):
        response = await create_with_callback(client, uuid.uuid4(), url)
        assert response.status_code == 422, url
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "callback_url"]


async def test_a_name_resolving_to_10_x_is_refused_at_creation_without_naming_the_address(
    database_url: URL, clean_database: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer names the rule; the address (internal DNS) is for the operator's log."""
    app = create_app(webhook_settings(), database_url=database_url, resolver=FakeDns())
    with caplog.at_level(logging.INFO, logger="app.webhooks.policy"):
        async with serve(app) as client:
            response = await create_with_callback(
                client, uuid.uuid4(), "https://internal.example.org/hook"
            )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == (
        "the callback host internal.example.org resolves to a non-public address."
    )
    assert "10.1.2.3" not in response.text
    assert any("10.1.2.3" in record.getMessage() for record in caplog.records)


async def test_without_a_secret_a_callback_is_refused(
    database_url: URL, clean_database: None
) -> None:
    app = create_app(webhook_settings(webhook_secret=None), database_url=database_url)
    async with serve(app) as client:
        response = await create_with_callback(client, uuid.uuid4(), "https://example.org/h")
    assert response.status_code == 422
    assert "MANAGER_WEBHOOK_SECRET" in response.json()["detail"][0]["msg"]


@contextlib.asynccontextmanager
async def ended_after_its_host_changed(
    database_url: URL,
    engine: AsyncEngine,
    user_id: uuid.UUID,
    resolves_to: list[IPAddress] | None,
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A task created while its callback's host is public; then the host resolves to
    `resolves_to` (None: not at all) and the task ends. Yields, while the app still serves,
    its client and the task's id: what happens at send time is the test's to check."""
    dns = FakeDns()
    app = create_app(webhook_settings(), database_url=database_url, resolver=dns)
    async with serve(app) as client:
        task_id = await create_task(client, user_id, "https://hooks.example.org/hook")
        if resolves_to is None:
            del dns.names["hooks.example.org"]
        else:
            dns.names["hooks.example.org"] = resolves_to
        await finish(engine, [task_id])
        yield client, task_id


async def test_a_name_that_turns_private_after_creation_is_refused_at_send_time(
    database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    """DNS rebinding: public when checked at creation, 10.x when the delivery is sent."""
    async with ended_after_its_host_changed(
        database_url, engine, uuid.uuid4(), [ip_address("10.0.0.7")]
    ):
        [row] = await wait_states(engine, 1, state="refused")
    assert row["attempts"] == 1


async def test_the_metadata_address_is_refused_at_send_time_too(
    database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    """A host that resolves to the cloud metadata address is never connected to: the
    transport's own resolution refuses it before any socket is opened."""
    user_id = uuid.uuid4()
    async with ended_after_its_host_changed(
        database_url, engine, user_id, [IPv4Address("169.254.169.254")]
    ) as (client, task_id):
        await wait_states(engine, 1, state="refused")
        listed = await client.get(
            f"/tasks/{task_id}/deliveries", headers={"X-User-Id": str(user_id)}
        )
    [row] = await deliveries(engine)
    assert row["state"] == "refused"
    [attempt] = listed.json()[0]["attempts"]
    assert attempt["outcome"] == "refused"
    assert attempt["detail"] == (
        "the callback host hooks.example.org resolves to a non-public address"
    )
    assert "169.254.169.254" not in listed.text


async def test_a_host_that_stops_resolving_is_retried_not_refused(
    database_url: URL, clean_database: None, engine: AsyncEngine
) -> None:
    """DNS trouble at send time passes: the delivery stays pending and is tried again."""
    async with ended_after_its_host_changed(database_url, engine, uuid.uuid4(), None):

        async def retried() -> dict[str, object] | None:
            [row] = await deliveries(engine)
            return row if int(str(row["attempts"])) >= 2 else None

        row = await eventually(retried, message="a second attempt")
    assert row["state"] == "pending"
