"""task_failures: the failures read off the history, labelled once

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every `failed` transition in the last `window_seconds` (of `for_user` unless NULL), with
# the stage it failed in, the reason and the technical kind. The console's groups and its
# bulk retry both read failures through it, so they always agree on what a group is.
# A STABLE single-SELECT SQL function: the planner inlines it into the caller's query, and
# columns a caller does not read (`latest`) are not computed.
TASK_FAILURES = """
CREATE FUNCTION task_failures(window_seconds float8, for_user uuid, stage_by_status jsonb)
RETURNS TABLE (task_id uuid, failed_at timestamptz, task_status text, latest boolean,
               stage text, reason text, kind text)
LANGUAGE sql STABLE
AS $$
SELECT failure.task_id, failure.failed_at, failure.task_status, failure.latest,
       -- The service of the status the task failed in, that status itself otherwise,
       -- 'claim' when none.
       coalesce(stage_by_status ->> failure.prior, failure.prior, 'claim'),
       -- Without the attempt count, so that one outage makes one group.
       regexp_replace(coalesce(failure.comment, ''), ' \\(after \\d+ attempts\\)$', ''),
       coalesce(nullif(failure.kind, ''), 'unknown')
FROM (
    SELECT e.task_id, e.created_at AS failed_at, t.status::text AS task_status,
           -- An action's detail is its JSON; an older pipeline failure's is its comment.
           CASE WHEN left(e.detail, 1) = '{' THEN (e.detail::jsonb) ->> 'comment'
                ELSE e.detail END AS comment,
           CASE WHEN left(e.detail, 1) = '{'
                THEN coalesce((e.detail::jsonb) ->> 'kind', (e.detail::jsonb) ->> 'action')
           END AS kind,
           (SELECT p.status FROM task_events p
            WHERE p.task_id = e.task_id AND p.kind = 'status' AND p.seq < e.seq
            ORDER BY p.seq DESC LIMIT 1) AS prior,
           NOT EXISTS (SELECT 1 FROM task_events n
                       WHERE n.task_id = e.task_id AND n.kind = 'status' AND n.seq > e.seq)
               AS latest
    FROM task_events e JOIN tasks t ON t.id = e.task_id
    WHERE e.kind = 'status' AND e.status = 'failed'
      AND e.created_at >= now() - make_interval(secs => window_seconds)
      AND (for_user IS NULL OR t.user_id = for_user)
) failure
$$
"""


def upgrade() -> None:
    op.execute(TASK_FAILURES)


def downgrade() -> None:
    op.execute("DROP FUNCTION task_failures(float8, uuid, jsonb)")
