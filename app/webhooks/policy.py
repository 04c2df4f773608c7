"""Which callback URLs may be called: the SSRF rules, checked at creation and at send time.

A callback must be `https`, or `http` on a host named in MANAGER_WEBHOOK_ALLOWED_HOSTS.
Its host must resolve only to public addresses: one loopback, private, link-local,
unspecified, multicast or reserved address among them refuses it, unless the host is
named in MANAGER_WEBHOOK_ALLOWED_HOSTS. The check runs when a task is created (the
client hears of a bad URL at once) and again before every connection (DNS may have
changed since); the transport then connects to the very addresses it checked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import httpx

from app.db.models import CALLBACK_URL_MAX_LENGTH

IPAddress = IPv4Address | IPv6Address
# host, port → its addresses. Injectable, so a test can make a name resolve to 10.x.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
# A client chooses the name; a resolver that stalls on it must not hold the request (nor
# the threads `getaddrinfo` runs on) for long. At send time the attempt's deadline rules.
RESOLVE_SECONDS = 5.0


class CallbackRefused(Exception):
    """The URL or the addresses it resolves to break the policy; the message says why."""


class HostNotResolved(CallbackRefused):
    """No address (yet): refused at creation, but at send time retried like a lost
    connection, since DNS trouble passes."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host`, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ip_address(str(sockaddr[0]).partition("%")[0])  # an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    return addresses


def is_public(address: IPAddress) -> bool:
    """False for every range a request must not reach from inside the service's network."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    host: str
    port: int
    trusted: bool  # named in MANAGER_WEBHOOK_ALLOWED_HOSTS


class CallbackPolicy:
    def __init__(self, allowed_hosts: Collection[str], resolver: Resolver | None = None) -> None:
        self.allowed_hosts = frozenset(host.lower().rstrip(".") for host in allowed_hosts)
        self.resolver: Resolver = resolver or system_resolver

    def is_trusted(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_hosts

    def parse(self, url: str) -> CallbackTarget:
        """The URL's rules that need no DNS: scheme, host, no credentials, length."""
        if len(url) > CALLBACK_URL_MAX_LENGTH:
            raise CallbackRefused(
                f"callback_url is longer than {CALLBACK_URL_MAX_LENGTH} characters"
            )
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise CallbackRefused("callback_url is not a valid URL") from None
        host = parsed.host.lower().rstrip(".")
        if parsed.scheme not in ("http", "https") or not host:
            raise CallbackRefused("callback_url must be an absolute https URL")
        if parsed.userinfo:
            raise CallbackRefused("callback_url must not carry credentials")
        trusted = self.is_trusted(host)
        if parsed.scheme == "http" and not trusted:
            raise CallbackRefused(
                "callback_url must use https (http only for hosts the operator allowed)"
            )
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return CallbackTarget(url=str(parsed), host=host, port=port, trusted=trusted)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to, all checked; refused if any is not public."""
        try:
            literal: IPAddress | None = ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                async with asyncio.timeout(RESOLVE_SECONDS):
                    found = await self.resolver(host, port)
            except (OSError, TimeoutError) as error:
                raise HostNotResolved(f"the callback host {host} does not resolve") from error
        if not found:
            raise HostNotResolved(f"the callback host {host} does not resolve")
        if not self.is_trusted(host):
            for address in found:
                if not is_public(address):
                    raise CallbackRefused(
                        f"the callback host {host} resolves to a non-public address ({address})"
                    )
        return found

    async def check(self, url: str) -> str:
        """The whole policy, as at creation: the URL to store, or `CallbackRefused`."""
        target = self.parse(url)
        await self.addresses(target.host, target.port)
        return target.url
