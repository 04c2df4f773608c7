-- The operator console's reads: the overview's figures and a task's timeline.

-- name: unfinished_by_status
-- Unfinished tasks, counted by status.
SELECT status, count(*) AS tasks
FROM tasks
WHERE status NOT IN ('completed', 'failed')
GROUP BY status
ORDER BY status;

-- name: endings_per_minute
-- Tasks ended per minute over the last :minutes, read off the history (a retried task
-- that fails again counts each time).
SELECT floor(extract(epoch FROM now() - created_at) / 60)::int AS minutes_ago,
       status, count(*) AS tasks
FROM task_events
WHERE kind = 'status' AND status IN ('completed', 'failed')
  AND created_at >= now() - make_interval(mins => :minutes)
GROUP BY 1, 2;

-- name: stage_durations
-- How long each of the :stage_statuses lasted over the last :hours (median and 95th
-- percentile): from entering the status to the task's next transition.
WITH moves AS (
    SELECT status, created_at,
           lead(created_at) OVER (PARTITION BY task_id ORDER BY seq) AS left_at
    FROM task_events
    WHERE kind = 'status'
      AND created_at >= now() - make_interval(hours => :hours)
)
SELECT status, count(*) AS runs,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM left_at - created_at)) AS p50,
       percentile_cont(0.95) WITHIN GROUP (
           ORDER BY extract(epoch FROM left_at - created_at)) AS p95
FROM moves
WHERE left_at IS NOT NULL AND status = ANY(CAST(:stage_statuses AS text[]))
GROUP BY status;

-- name: task_summary
-- A task's fields and the kinds of audio it still has stored.
SELECT t.id, t.user_id, t.title, t.status, t.comment, t.created_at, t.updated_at,
       t.callback_url,
       array(SELECT a.kind FROM task_audio a WHERE a.task_id = t.id ORDER BY a.kind) AS audio
FROM tasks t
WHERE t.id = :id;

-- name: timeline
-- A task's history, oldest first, each entry with the seconds until the next one.
SELECT seq, kind, status, stage, attempt, detail, created_at AS at,
       extract(epoch FROM lead(created_at) OVER (ORDER BY seq) - created_at)
           AS seconds_until_next
FROM task_events
WHERE task_id = :id
ORDER BY seq;

-- name: user_tasks
-- A user's latest :limit tasks, newest first (their audio is not listed).
SELECT t.id, t.user_id, t.title, t.status, t.comment, t.created_at, t.updated_at,
       t.callback_url, ARRAY[]::text[] AS audio
FROM tasks t
WHERE t.user_id = :user_id
ORDER BY t.created_at DESC, t.id DESC
LIMIT :limit;
