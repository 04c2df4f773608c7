"""A deadline on a request's head: a connection that has not sent one in time is closed.

uvicorn times out idle keep-alive connections, and the body has its own minimum rate
(app/api/upload/body_limit.py), but nothing bounds the head itself: a client that opens a
connection and sends "GET / HTTP/1.1\\r\\nHost:" and nothing more holds it forever
(a slowloris). This protocol, uvicorn's httptools one plus a timer, gives each request
head `seconds` to arrive in full, counted from the connection's opening or from the
end of the previous response on a kept-alive connection.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; `header_timeout_seconds` is set by `with_header_deadline`."""

    header_timeout_seconds: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        """Start the clock for the next head, unless a request is still being served."""
        self._cancel_head_timer()
        if self.transport.is_closing() or (
            self.cycle is not None and not self.cycle.response_complete
        ):
            return  # a pipelined request runs; its response's end starts the clock again
        self._head_timer = self.loop.call_later(
            self.header_timeout_seconds, self._head_overdue, self.cycle
        )

    def _head_overdue(self, cycle_before: object) -> None:
        self._head_timer = None
        # A new cycle means a head arrived in time (uvicorn makes one per complete head).
        if self.cycle is cycle_before and not self.transport.is_closing():
            log.info(
                "closing a connection that sent no complete request head within %.0fs",
                self.header_timeout_seconds,
            )
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def with_header_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`), with a deadline of `seconds`."""
    return type(
        "HeaderDeadlineProtocol",
        (HeaderDeadlineProtocol,),
        {"header_timeout_seconds": seconds},
    )
