"""A stand-in replica that stops inside a claim: run as a process, then frozen (SIGSTOP).

`python -m tests.ha.frozen_claimer DSN OWNER`: takes OWNER's liveness lock, opens a claim
transaction and claims a task, prints `claimed`, and waits without committing. Its
sessions set no idle-in-transaction bound, as an unbounded replica's would.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg

from app.db.queries import queries


async def main(dsn: str, owner: str) -> None:
    lock = await asyncpg.connect(dsn, server_settings={"application_name": "frozen-replica"})
    await lock.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", owner)
    claiming = await asyncpg.connect(
        dsn,
        server_settings={
            "application_name": "frozen-replica",
            "idle_in_transaction_session_timeout": "0",
        },
    )
    await queries("queue").begin_claim.execute(claiming)
    row = await queries("queue").claim_next_task.fetchrow(
        claiming, owner=owner, lease=300, per_user=100, max_claims=20
    )
    print("claimed" if row is not None else "nothing", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, signal.pause)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
