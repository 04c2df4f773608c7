-- The task history (`task_events`): appending to it and reading it back. Events are
-- numbered and NOTIFYed by `record_task_events` (migration 0006), the one implementation
-- every statement that records a move uses.

-- name: append_event
-- Number an event after the task's last one, store it and NOTIFY it at commit; no row
-- when the task does not exist.
WITH moved AS (
    UPDATE tasks SET last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id
    RETURNING id, last_event_seq
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[CAST(:status AS text)],
                          event_kind => :kind, event_stage => :stage,
                          event_attempt => CAST(:attempt AS integer), event_detail => :detail)
FROM moved

-- name: notify_deleted
-- Tell followers that the task is gone (sequence number 0); sent at commit.
SELECT pg_notify('task_events', CAST(CAST(:task_id AS uuid) AS text) || ':0')

-- name: list_events
-- The task's history after :after_seq, oldest first.
SELECT task_id, seq, kind, status, stage, attempt, detail, created_at
FROM task_events
WHERE task_id = :task_id AND seq > :after_seq
ORDER BY seq
