"""What every connection of ours to PostgreSQL sets up, so that none can hold the others up.

A process that freezes (SIGSTOP, a paused VM) or loses the network while one of its
sessions holds locks or sits inside a transaction must not stall everyone else until TCP
gives up hours later. So every session, pooled or dedicated, gets:

- server-side bounds: `idle_in_transaction_session_timeout` ends a session left inside a
  transaction (its locks go with it), `lock_timeout` bounds a wait for a lock, and
  `statement_timeout` a runaway statement;
- server-side TCP keepalives and `tcp_user_timeout`, so the server notices within seconds
  that the client's machine went away;
- the same on the client's socket, so this process notices a dead server (or a partition)
  without waiting for a query to time out.

With a host list (`MANAGER_DB_POSTGRES_HOST=h1,h2`) connections go only to the server that
accepts writes (`target_session_attrs=read-write`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.compat import connection_socket
from app.config import Settings

# Probes after the idle time, this far apart, this many before the connection is dead.
KEEPALIVE_INTERVAL_SECONDS = 1
KEEPALIVE_COUNT = 3
# Per server tried: a host list moves on to the next host after this.
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class SessionOptions:
    statement_timeout_seconds: float = 30.0
    lock_timeout_seconds: float = 5.0
    idle_in_transaction_timeout_seconds: float = 10.0
    keepalive_idle_seconds: int = 5
    tcp_user_timeout_seconds: float = 10.0
    read_write_only: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionOptions:
        return cls(
            statement_timeout_seconds=settings.db_statement_timeout_seconds,
            lock_timeout_seconds=settings.db_lock_timeout_seconds,
            idle_in_transaction_timeout_seconds=settings.db_idle_in_transaction_timeout_seconds,
            keepalive_idle_seconds=settings.db_keepalive_idle_seconds,
            tcp_user_timeout_seconds=settings.db_tcp_user_timeout_seconds,
            read_write_only=len(settings.database_hosts()) > 1,
        )

    def server_settings(self, application_name: str) -> dict[str, str]:
        return {
            "application_name": application_name,
            "statement_timeout": _ms(self.statement_timeout_seconds),
            "lock_timeout": _ms(self.lock_timeout_seconds),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction_timeout_seconds),
            "tcp_keepalives_idle": str(self.keepalive_idle_seconds),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
            "tcp_user_timeout": _ms(self.tcp_user_timeout_seconds),
        }

    def connect_args(self, application_name: str) -> dict[str, Any]:
        """Keyword arguments for `asyncpg.connect` (and SQLAlchemy's `connect_args`)."""
        args: dict[str, Any] = {"server_settings": self.server_settings(application_name)}
        if self.read_write_only:
            args["target_session_attrs"] = "read-write"
        return args

    def tune_socket(self, connection: asyncpg.Connection) -> None:
        """Client-side keepalives and user timeout on the connection's TCP socket."""
        sock = connection_socket(connection)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # a Unix socket: nothing between us and the server to fail silently
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", self.keepalive_idle_seconds),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
            ("TCP_USER_TIMEOUT", int(self.tcp_user_timeout_seconds * 1000)),
        ):
            option = getattr(socket, name, None)
            if option is not None:  # Linux has them all; other systems some
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def connect(
    dsn: str, options: SessionOptions, *, application_name: str
) -> asyncpg.Connection:
    """A dedicated connection with `options` applied (LISTEN, liveness lock)."""
    connection = await asyncpg.connect(
        dsn, timeout=CONNECT_TIMEOUT_SECONDS, **options.connect_args(application_name)
    )
    options.tune_socket(connection)
    return connection


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))
