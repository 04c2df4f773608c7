"""Which callback URLs may be called: the SSRF rules, checked at creation and at send time.

A callback must be `https`, or `http` on a host named in MANAGER_WEBHOOK_ALLOWED_HOSTS.
Its host must resolve only to public addresses: one loopback, private, link-local,
site-local, shared (CGNAT), unspecified, multicast or reserved address among them
refuses it, and so does an IPv6 address that carries such an IPv4 address (6to4,
Teredo, NAT64, IPv4-mapped), unless the host is named in MANAGER_WEBHOOK_ALLOWED_HOSTS
(`host` for any port, `host:port` for that port only). The check runs when a task is
created (the client hears of a bad URL at once) and again before every connection (DNS
may have changed since); the transport then connects to the very addresses it checked.
A refusal names the rule, never the address: the answer must not map internal DNS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import httpx

from app.config import allowed_host_entry
from app.db.models import CALLBACK_URL_MAX_LENGTH
from app.webhooks.resolver import IPAddress as IPAddress  # the type of what a Resolver gives
from app.webhooks.resolver import ThreadedResolver

log = logging.getLogger(__name__)

# host, port → its addresses. Injectable, so a test can make a name resolve to 10.x.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
# A client chooses the name; a resolver that stalls on it must not hold the request for
# long. At send time the attempt's deadline rules too.
RESOLVE_SECONDS = 5.0
# Shared address space (RFC 6598): a carrier's NAT, inside someone's network.
SHARED_ADDRESS_SPACE = IPv4Network("100.64.0.0/10")
# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
NAT64_PREFIX = IPv6Network("64:ff9b::/96")
# IPv4-compatible addresses (deprecated, RFC 4291): ::a.b.c.d, but not :: and ::1.
IPV4_COMPATIBLE = IPv6Network("::/96")
# Site-local (deprecated, RFC 3879, still routed inside some networks) and local-use
# NAT64 (RFC 8215, a network's own translator): refused whatever Python's version says.
REFUSED_IPV6 = (IPv6Network("fec0::/10"), IPv6Network("64:ff9b:1::/48"))


class CallbackRefused(Exception):
    """The URL or the addresses it resolves to break the policy; the message says why."""


class HostNotResolved(CallbackRefused):
    """No address (yet): refused at creation, but at send time retried like a lost
    connection, since DNS trouble passes."""


def embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: IPv4-mapped, 6to4, Teredo (server
    and client), NAT64. Empty for any other address."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    if address in NAT64_PREFIX:
        return [IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def is_public(address: IPAddress) -> bool:
    """False for every range a request must not reach from inside the service's network."""
    if isinstance(address, IPv6Address):
        if address in IPV4_COMPATIBLE and int(address) > 1:
            return False  # deprecated; nothing legitimate answers there
        carried = embedded_ipv4(address)
        if carried:
            # These stand for IPv4 addresses and are judged by them alone: Python's own
            # ranges disagree between versions, and marking NAT64 reserved would refuse
            # every host of an IPv6-only network behind DNS64.
            return all(is_public(inner) for inner in carried)
        if any(address in network for network in REFUSED_IPV6):
            return False
    elif address in SHARED_ADDRESS_SPACE:
        return False
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
    """The rules, with the allowed hosts and the resolver of one process.

    Without an injected `resolver`, names are looked up on `dns_threads` threads of the
    policy's own, at most `lookups_per_user` at once for one user (`close` them at the end).
    """

    def __init__(
        self,
        allowed_hosts: Collection[str],
        resolver: Resolver | None = None,
        *,
        dns_threads: int = 4,
        lookups_per_user: int = 2,
        resolve_seconds: float = RESOLVE_SECONDS,
    ) -> None:
        self.allowed_hosts: dict[str, frozenset[int] | None] = {}
        for entry in allowed_hosts:
            host, port = allowed_host_entry(entry)
            ports = self.allowed_hosts.get(host, frozenset())
            # An entry without a port allows them all, whatever else names the host.
            if port is None or ports is None:
                self.allowed_hosts[host] = None
            else:
                self.allowed_hosts[host] = ports | {port}
        self.resolver: Resolver = resolver or ThreadedResolver(dns_threads, lookups_per_user)
        self.resolve_seconds = resolve_seconds

    def close(self) -> None:
        if isinstance(self.resolver, ThreadedResolver):
            self.resolver.close()

    def is_trusted(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        if host not in self.allowed_hosts:
            return False
        ports = self.allowed_hosts[host]
        return ports is None or port in ports

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
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        trusted = self.is_trusted(host, port)
        if parsed.scheme == "http" and not trusted:
            raise CallbackRefused(
                "callback_url must use https (http only for hosts the operator allowed)"
            )
        return CallbackTarget(url=str(parsed), host=host, port=port, trusted=trusted)

    async def addresses(self, host: str, port: int, user: Hashable = None) -> list[IPAddress]:
        """The addresses to connect to, all checked; refused if any is not public.

        `user` is whom a creation's lookup counts against (None: the sender's own).
        """
        try:
            literal: IPAddress | None = ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                async with asyncio.timeout(self.resolve_seconds):
                    found = await self._resolve(host, port, user)
            except (OSError, TimeoutError) as error:
                raise HostNotResolved(f"the callback host {host} does not resolve") from error
        if not found:
            raise HostNotResolved(f"the callback host {host} does not resolve")
        if not self.is_trusted(host, port):
            for address in found:
                if not is_public(address):
                    # For the operator only: the client's answer must not map internal DNS.
                    log.info("callback host %s refused: it resolves to %s", host, address)
                    raise CallbackRefused(
                        f"the callback host {host} resolves to a non-public address"
                    )
        return found

    async def _resolve(self, host: str, port: int, user: Hashable) -> list[IPAddress]:
        if isinstance(self.resolver, ThreadedResolver):
            return await self.resolver.lookup(host, port, owner=user)
        return await self.resolver(host, port)

    async def check(self, url: str, user: Hashable = None) -> str:
        """The whole policy, as at creation: the URL to store, or `CallbackRefused`."""
        target = self.parse(url)
        await self.addresses(target.host, target.port, user)
        return target.url
