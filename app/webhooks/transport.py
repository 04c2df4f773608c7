"""An httpx client whose every connection goes through the callback policy.

The check and the connection use the same resolution: the network backend resolves the
host, refuses it unless every address is allowed, and connects to one of those checked
addresses. A name that resolves to a public address for the check and to 10.0.0.1 a
moment later (DNS rebinding) therefore cannot slip through. The URL keeps its host
name, so TLS still verifies the certificate against it (SNI) and the pool keys
connections by name, not by address.

No redirects are followed (a redirect is a failed attempt), the environment's proxy
settings are ignored (a proxy would connect on our behalf, unchecked), and no cookies
are kept between receivers.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httpx
from httpcore import AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream

from app.compat import replace_connection_pool
from app.webhooks.policy import CallbackPolicy

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class GuardedBackend(AsyncNetworkBackend):
    """httpcore's network backend with the policy between the name and the socket."""

    def __init__(self, policy: CallbackPolicy, inner: AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        # What httpcore's default backend picks on asyncio, the only loop the service runs.
        self.inner = inner or AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        addresses = await self.policy.addresses(host, port)  # raises CallbackRefused
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(
    policy: CallbackPolicy, *, timeout: float, connections: int, tls: ssl.SSLContext
) -> httpx.AsyncClient:
    """The client of the delivery workers (one per process, closed by the lifespan).

    `tls` is the process's shared TLS context (a new one per transport would reload the
    CA bundle).
    """
    transport = httpx.AsyncHTTPTransport(trust_env=False, verify=tls)
    # httpx takes no network backend, so its pool is replaced with one that has ours.
    replace_connection_pool(
        transport,
        httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=30.0,
            network_backend=GuardedBackend(policy),
        ),
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
        headers={"user-agent": "ilps-task-manager-webhooks/1"},
    )
