"""Callback DNS: a name server that never answers holds the callback lookups' own threads,
at most a few per user, and nothing else of the process."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.webhooks.policy import CallbackPolicy, HostNotResolved
from app.webhooks.resolver import AddressInfo, ThreadedResolver
from tests.conftest import serve
from tests.waiting import eventually
from tests.webhooks.conftest import create_with_callback, webhook_settings

PUBLIC = "93.184.215.14"
# Long enough for anything the tests do meanwhile; the stalled threads end at the tests' end.
STALL_SECONDS = 60.0


class StallingDns:
    """`getaddrinfo` whose name server never answers for `*.stalls.example` (until
    released), answers a public address for `*.good.example`, and is the real one else."""

    def __init__(self, real: Callable[..., AddressInfo]) -> None:
        self.real = real
        self.released = threading.Event()
        self.stalling = 0  # lookups stuck now

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> AddressInfo:
        if host.endswith(".stalls.example"):
            self.stalling += 1
            self.released.wait(STALL_SECONDS)
            self.stalling -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host.endswith(".good.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, int(port)))]
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingDns]:
    """Replaces the system's `getaddrinfo` for everyone: the default executor's lookups
    (`loop.getaddrinfo`) go through it too."""
    stalling = StallingDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", stalling)
    try:
        yield stalling
    finally:
        stalling.released.set()


async def test_a_name_server_that_never_answers_delays_nothing_else(
    dns: StallingDns, engine: AsyncEngine
) -> None:
    """Far more stalled callback lookups than the default executor has threads, from many
    users: the default executor's lookups and the database still answer at once."""
    policy = CallbackPolicy([], dns_threads=2, lookups_per_user=1, resolve_seconds=0.2)
    assert isinstance(policy.resolver, ThreadedResolver)
    try:
        outcomes = await asyncio.gather(
            *(
                policy.check(f"https://n{i}.stalls.example/hook", user=f"user-{i}")
                for i in range(40)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, HostNotResolved) for outcome in outcomes), outcomes
        assert policy.resolver.busy == 2  # the two threads are still stuck

        loop = asyncio.get_running_loop()
        async with asyncio.timeout(20):  # a deadline for the test, not a measurement
            assert await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
            async with engine.connect() as connection:
                assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        dns.released.set()
        policy.close()


async def test_a_user_holds_at_most_their_share_of_the_lookup_threads(dns: StallingDns) -> None:
    resolver = ThreadedResolver(threads=3, per_owner=1)
    policy = CallbackPolicy([], resolver, resolve_seconds=0.2)
    try:
        stalled = await asyncio.gather(
            *(policy.check(f"https://n{i}.stalls.example/h", user="greedy") for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, HostNotResolved) for outcome in stalled)
        assert resolver.busy == 1  # the first lookup's thread; the rest never got one
        # Its own next lookup waits for its stalled one, even for a name that answers.
        with pytest.raises(HostNotResolved):
            await policy.check("https://a.good.example/h", user="greedy")
        # Everybody else, and the sender's own lookups, go on.
        assert await policy.check("https://b.good.example/h", user="someone-else")
        assert await policy.addresses("c.good.example", 443)

        # The share comes back when the stalled thread really ends, not before.
        dns.released.set()
        await eventually(lambda: resolver.busy == 0 or None, message="the stalled thread ends")
        assert await policy.check("https://a.good.example/h", user="greedy")
    finally:
        policy.close()


async def test_creation_lookups_count_against_the_creating_user(
    dns: StallingDns, database_url: URL, clean_database: None
) -> None:
    """Through the API: one user's stalled callback takes that user's only lookup, so their
    next callback waits (and is refused at its deadline) while another user's passes."""
    settings = webhook_settings(webhook_dns_threads=2, webhook_dns_lookups_per_user=1)
    app = create_app(settings, database_url=database_url)
    greedy, other = uuid.uuid4(), uuid.uuid4()
    async with serve(app) as client:
        stalling = asyncio.create_task(
            create_with_callback(client, greedy, "https://x.stalls.example/h")
        )
        await eventually(lambda: dns.stalling == 1 or None, message="a stalled lookup")
        theirs, others = await asyncio.gather(
            create_with_callback(client, greedy, "https://a.good.example/h"),
            create_with_callback(client, other, "https://a.good.example/h"),
        )
        stalled = await stalling
    assert stalled.status_code == 422
    assert "does not resolve" in stalled.json()["detail"][0]["msg"]
    assert theirs.status_code == 422
    assert others.status_code == 201, others.text
