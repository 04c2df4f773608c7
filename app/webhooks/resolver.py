"""Callback DNS lookups on a few threads of their own, a few at a time per user.

`getaddrinfo` blocks its thread until the name server answers or the system resolver
gives up, and nothing can cancel it. Run on the event loop's default executor, a name
that never answers would hold those threads after the caller stopped waiting, and every
other lookup of the process (the database's connections included) would queue behind
it. Here a lookup only starts when one of this resolver's own threads is free, and a
thread counts as busy (for the pool and for the user who asked) until `getaddrinfo`
really returns, not until the caller gives up. So a hanging name server holds at most
these threads, and one user at most `per_owner` of them; the caller's wait for a free
thread is an ordinary coroutine that a deadline cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

IPAddress = IPv4Address | IPv6Address
AddressInfo = list[tuple[Any, ...]]


def system_getaddrinfo(host: str, port: int) -> AddressInfo:
    # Looked up at call time, so a test can replace `socket.getaddrinfo` with a stalling one.
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def unique_addresses(infos: AddressInfo) -> list[IPAddress]:
    """The addresses of `getaddrinfo`'s answer, in its order, without repeats."""
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ip_address(str(sockaddr[0]).partition("%")[0])  # an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    return addresses


class ThreadedResolver:
    """A `Resolver` (host, port → addresses) with bounded, per-owner lookups."""

    def __init__(
        self,
        threads: int,
        per_owner: int,
        getaddrinfo: Callable[[str, int], AddressInfo] = system_getaddrinfo,
    ) -> None:
        self.threads = threads
        self.per_owner = per_owner
        self._getaddrinfo = getaddrinfo
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="callback-dns")
        self._busy = 0
        self._busy_of: Counter[Hashable] = Counter()
        self._freed = asyncio.Event()

    @property
    def busy(self) -> int:
        """Threads in `getaddrinfo` now, including those whose caller gave up."""
        return self._busy

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        return await self.lookup(host, port)

    async def lookup(self, host: str, port: int, owner: Hashable = None) -> list[IPAddress]:
        """`owner` (a user id; None for the service's own lookups) may have at most
        `per_owner` lookups running; None is bounded by the threads alone."""
        while not self._may_start(owner):
            await self._freed.wait()  # cancellable: no thread is taken yet
        loop = asyncio.get_running_loop()
        self._busy += 1
        if owner is not None:
            self._busy_of[owner] += 1
        try:
            future = self._executor.submit(self._getaddrinfo, host, port)
        except BaseException:
            self._release(owner)
            raise

        def finished(_: Future[AddressInfo]) -> None:
            # On the lookup's thread, after getaddrinfo returned, whoever still waits.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._release, owner)

        future.add_done_callback(finished)
        return unique_addresses(await asyncio.wrap_future(future))

    def close(self) -> None:
        """Stop taking lookups; threads still stuck in `getaddrinfo` end on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _may_start(self, owner: Hashable) -> bool:
        if self._busy >= self.threads:
            return False
        return owner is None or self._busy_of[owner] < self.per_owner

    def _release(self, owner: Hashable) -> None:
        self._busy -= 1
        if owner is not None:
            self._busy_of[owner] -= 1
            if self._busy_of[owner] <= 0:
                del self._busy_of[owner]
        # Wake every waiter to look again; a fresh event for the next ones to wait on.
        self._freed.set()
        self._freed = asyncio.Event()
