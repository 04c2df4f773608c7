"""queue SQL functions: owner liveness, dead leases and recording task events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 03:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The predicates are single-expression SQL functions without SET or SECURITY DEFINER, so
# the planner inlines them: the claim's plans are the same as with the expressions written
# out. `owner_locks` returns a set (a STABLE set-returning SQL function inlines in FROM).
FUNCTIONS = [
    # The key of an owner's session-level advisory lock, held while its process lives.
    """
    CREATE FUNCTION owner_lock_key(owner text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended(owner, 0) $$
    """,
    # The server a lock lives on: cluster, timeline and postmaster start. Advisory locks are
    # not replicated and vanish at a restart; a promotion changes the timeline (read from
    # the WAL position, which moves at once). NULL on a standby. VOLATILE, like what it reads.
    """
    CREATE FUNCTION server_identity() RETURNS text
    LANGUAGE sql VOLATILE
    AS $$
    SELECT CASE WHEN NOT pg_is_in_recovery() THEN
        (pg_control_system()).system_identifier::text
        || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
        || '/' || extract(epoch FROM pg_postmaster_start_time())::text END
    $$
    """,
    # The owner locks held right now, as keys, with the server they are held on: one read
    # of the lock table, for a statement to take once (a MATERIALIZED CTE).
    """
    CREATE FUNCTION owner_locks() RETURNS TABLE (held_keys bigint[], server text)
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(array_agg((l.classid::bigint << 32) | l.objid::bigint), '{}'),
           server_identity()
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    $$
    """,
    """
    CREATE FUNCTION owner_lock_held(owner text, held_keys bigint[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT owner_lock_key(owner) = ANY(held_keys) $$
    """,
    # A lease whose owner's lock is free, stamped (`leased_on`) on the server that holds
    # the locks, is dead: owners stamp only under their lock and never take a key again on
    # one server, so a free lock there means the owner's lock session ended. Leases stamped
    # on another server (before a restart or promotion) are left to their clock.
    """
    CREATE FUNCTION lease_is_dead(lease_owner text, leased_on text, held_keys bigint[],
                                  server text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT lease_owner IS NOT NULL AND leased_on = server
       AND NOT owner_lock_held(lease_owner, held_keys)
    $$
    """,
    # Records a task's move: one history row per status in `statuses`, numbered up to
    # `last_seq` (the task's `last_event_seq`, already raised by their number by the
    # caller's UPDATE, whose row lock keeps numbers unique), each NOTIFYed on
    # 'task_events' as '<task id>:<seq>' (sent at commit). Returns how many it recorded.
    """
    CREATE FUNCTION record_task_events(
        for_task uuid,
        last_seq integer,
        statuses text[],
        event_kind text DEFAULT 'status',
        event_stage text DEFAULT NULL,
        event_attempt integer DEFAULT NULL,
        event_detail text DEFAULT NULL
    ) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    AS $$
    DECLARE
        recorded_count integer;
    BEGIN
        WITH recorded AS (
            INSERT INTO task_events (task_id, seq, kind, status, stage, attempt, detail)
            SELECT for_task, last_seq - cardinality(statuses) + step.number, event_kind,
                   step.status, event_stage, event_attempt, event_detail
            FROM unnest(statuses) WITH ORDINALITY AS step (status, number)
            RETURNING task_id, seq
        )
        SELECT count(pg_notify('task_events', recorded.task_id::text || ':' || recorded.seq))
        INTO recorded_count
        FROM recorded;
        RETURN recorded_count;
    END
    $$
    """,
]

# In reverse order of creation: later functions call earlier ones.
SIGNATURES = [
    "record_task_events(uuid, integer, text[], text, text, integer, text)",
    "lease_is_dead(text, text, bigint[], text)",
    "owner_lock_held(text, bigint[])",
    "owner_locks()",
    "server_identity()",
    "owner_lock_key(text)",
]


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
