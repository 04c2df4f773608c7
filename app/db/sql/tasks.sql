-- The task API's statements (app/tasks/repository.py) and the failures read off the
-- history (app/tasks/failures.py).

-- name: record_created_within_caps
-- Record a new task's `created` event and notify it, only while its user is within the
-- caps with the task and its upload counted; no row when over a cap. It runs after the
-- insert took the user's lock, so two creations of one user never both pass a cap.
WITH moved AS (
    UPDATE tasks
    SET last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id
      AND (SELECT count(*) FROM tasks mine
           WHERE mine.user_id = tasks.user_id AND mine.status NOT IN ('completed', 'failed'))
          <= :max_unfinished
      AND (SELECT coalesce(sum(audio.size), 0) FROM tasks mine
           JOIN task_audio audio ON audio.task_id = mine.id
           WHERE mine.user_id = tasks.user_id) <= :max_audio_bytes
    RETURNING id, status, last_event_seq
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status::text])
FROM moved;

-- name: user_usage
-- What :user_id holds against the caps: unfinished tasks, stored audio bytes, and the
-- seconds until the earliest audio of a finished task goes (kept :retention seconds;
-- NULL when all of it belongs to unfinished tasks).
SELECT
    (SELECT count(*) FROM tasks
     WHERE user_id = :user_id AND status NOT IN ('completed', 'failed')) AS unfinished,
    (SELECT coalesce(sum(a.size), 0) FROM tasks t
     JOIN task_audio a ON a.task_id = t.id WHERE t.user_id = :user_id) AS audio_bytes,
    (SELECT extract(epoch FROM min(coalesce(t.completed_at, t.updated_at))
                    + make_interval(secs => :retention) - now())
     FROM tasks t
     WHERE t.user_id = :user_id AND t.status IN ('completed', 'failed')
       AND EXISTS (SELECT 1 FROM task_audio a WHERE a.task_id = t.id)) AS audio_frees_in;

-- name: lock_user
-- Take the user's advisory lock (class :lock_class) until the transaction ends.
SELECT pg_advisory_xact_lock(:lock_class, hashtext(CAST(CAST(:user_id AS uuid) AS text)));

-- name: erase_user
-- Delete every task of :user_id, and with them (ON DELETE CASCADE) their audio, history
-- and deliveries, and the user's queue entry: no row keeps the user id. Each deleted
-- task's followers are told (sequence number 0) at commit.
WITH gone AS (DELETE FROM tasks WHERE user_id = :user_id RETURNING id),
queue AS (DELETE FROM queue_users WHERE user_id = :user_id)
SELECT gone.id, pg_notify('task_events', gone.id::text || ':0') FROM gone;

-- name: list_all_tasks
-- Every task of :user_id, newest first, as the legacy list shows them (UUIDs as text).
SELECT id::text AS id, status, title, accuracy, created_at
FROM tasks
WHERE user_id = :user_id
ORDER BY created_at DESC, id DESC;

-- name: list_tasks_page
-- A page of :user_id's tasks, newest first (UUIDs as text). The page statements differ
-- only in their filters: each shape keeps a prepared plan of its own on the
-- (user_id, created_at, id) index.
SELECT id::text AS id, user_id::text AS user_id, text_id::text AS text_id, title, status,
       accuracy, comment, created_at, updated_at, completed_at
FROM tasks
WHERE user_id = :user_id
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_tasks_page_in_status
-- A page of :user_id's tasks in :status, newest first.
SELECT id::text AS id, user_id::text AS user_id, text_id::text AS text_id, title, status,
       accuracy, comment, created_at, updated_at, completed_at
FROM tasks
WHERE user_id = :user_id AND status = :status
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_tasks_page_after
-- A page of :user_id's tasks, newest first, after the cursor (:after_created_at, :after_id).
SELECT id::text AS id, user_id::text AS user_id, text_id::text AS text_id, title, status,
       accuracy, comment, created_at, updated_at, completed_at
FROM tasks
WHERE user_id = :user_id AND (created_at, id) < (:after_created_at, :after_id)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_tasks_page_in_status_after
-- A page of :user_id's tasks in :status, newest first, after the cursor.
SELECT id::text AS id, user_id::text AS user_id, text_id::text AS text_id, title, status,
       accuracy, comment, created_at, updated_at, completed_at
FROM tasks
WHERE user_id = :user_id AND status = :status
  AND (created_at, id) < (:after_created_at, :after_id)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: failure_groups
-- Every failure in the last :window seconds, grouped by stage, reason and kind, most
-- frequent first. The filters are optional (NULL: any).
SELECT stage, reason, kind,
       count(*) AS failures, count(DISTINCT task_id) AS tasks,
       min(failed_at) AS first_seen, max(failed_at) AS last_seen
FROM task_failures(CAST(:window AS float8), CAST(:user_id AS uuid),
                   CAST(:stage_by_status AS jsonb))
WHERE (CAST(:stage AS text) IS NULL OR stage = CAST(:stage AS text))
  AND (CAST(:reason AS text) IS NULL OR reason = CAST(:reason AS text))
GROUP BY stage, reason, kind
ORDER BY count(*) DESC, max(failed_at) DESC;

-- name: failed_task_ids
-- Up to :limit tasks failed now (their failure is their latest transition) whose failure
-- is in the last :window seconds and matches the filters, oldest failure first.
SELECT task_id
FROM task_failures(CAST(:window AS float8), CAST(:user_id AS uuid),
                   CAST(:stage_by_status AS jsonb))
WHERE task_status = 'failed' AND latest
  AND (CAST(:stage AS text) IS NULL OR stage = CAST(:stage AS text))
  AND (CAST(:reason AS text) IS NULL OR reason = CAST(:reason AS text))
ORDER BY failed_at
LIMIT :limit;
