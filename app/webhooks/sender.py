"""One attempt: sign, POST, classify. Bounded in time and in what it reads of the answer.

The whole attempt (resolution, connection, TLS, sending, the status line, the capped
read of the body) runs under one deadline, so a receiver that trickles its answer a
byte at a time costs at most that deadline. At most `RESPONSE_BYTES_READ` of the body
are read: enough to reuse the connection after a short answer, never a huge one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from app.webhooks.policy import CallbackRefused, HostNotResolved
from app.webhooks.secrets import receiver_keys
from app.webhooks.signing import webhook_headers

RESPONSE_BYTES_READ = 4096


@dataclass(frozen=True)
class AttemptResult:
    """`outcome` is a metric label and the attempt's row: delivered, gone (410), redirect,
    rejected (other 4xx), server_error (5xx and anything else), timeout,
    connection_error or refused (the policy)."""

    outcome: str
    status_code: int | None = None
    detail: str | None = None


def classify(status_code: int) -> str:
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "gone"
    if 300 <= status_code < 400:
        return "redirect"
    if 400 <= status_code < 500:
        return "rejected"
    return "server_error"


async def send_once(
    client: httpx.AsyncClient,
    url: str,
    *,
    keys: Sequence[bytes],
    message_id: str,
    body: bytes,
    deadline: float,
) -> AttemptResult:
    """`keys` are the master keys; the attempt is signed with the receiver's own."""
    headers = webhook_headers(receiver_keys(keys, url), message_id, int(time.time()), body)
    try:
        async with asyncio.timeout(deadline):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                await _read_capped(response)
                status_code = response.status_code
    except TimeoutError:
        return AttemptResult("timeout", detail=f"no complete answer within {deadline:g}s")
    except HostNotResolved as unresolved:
        return AttemptResult("connection_error", detail=str(unresolved))
    except CallbackRefused as refused:
        return AttemptResult("refused", detail=str(refused))
    except httpx.TimeoutException:
        return AttemptResult("timeout", detail=f"no complete answer within {deadline:g}s")
    except httpx.HTTPError as error:
        # The receiver's URL is the client's own; naming the error's kind is enough.
        return AttemptResult("connection_error", detail=type(error).__name__)
    outcome = classify(status_code)
    detail = None
    if outcome == "redirect":
        detail = "redirects are not followed"
    return AttemptResult(outcome, status_code=status_code, detail=detail)


async def _read_capped(response: httpx.Response) -> None:
    """Read a short answer whole (the connection can be reused), stop at the cap."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > RESPONSE_BYTES_READ:
            break
