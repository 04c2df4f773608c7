-- Operator and owner actions on a task (app/tasks/retry.py): retry a failed one, cancel an
-- unfinished one. Each moves the task and records the move with `record_task_events`
-- (migration 0006) in one statement, its `detail` naming the action, who and why.

-- name: retry_state
-- What a retry needs to know of the task, locked for the retry: its status, whether it
-- has a transcription, and which audio is still stored. :owner NULL: any user's task.
SELECT t.status, t.result IS NOT NULL AS transcribed,
       EXISTS (SELECT 1 FROM task_audio a WHERE a.task_id = t.id AND a.kind = 'upload')
           AS has_upload,
       EXISTS (SELECT 1 FROM task_audio a
               WHERE a.task_id = t.id AND a.kind = 'preprocessed') AS has_preprocessed
FROM tasks t
WHERE t.id = :task_id AND (CAST(:owner AS uuid) IS NULL OR t.user_id = CAST(:owner AS uuid))
FOR UPDATE OF t

-- name: retry_failed_task
-- Put a failed task back at :entry_status with a fresh count of attempts and claims,
-- recorded with :action_detail; no row when the task is not failed.
WITH moved AS (
    UPDATE tasks SET status = :entry_status, comment = NULL, completed_at = NULL,
        stage_attempts = 0, claim_count = 0, run_after = now(),
        lease_owner = NULL, lease_expires_at = NULL,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND status = 'failed'
    RETURNING id, status, last_event_seq
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[],
                          event_detail => :action_detail)
FROM moved

-- name: cancel_task
-- End an unfinished task as failed with :comment, clearing its lease so a worker still
-- running a stage of it writes nothing more; recorded with :action_detail.
WITH moved AS (
    UPDATE tasks SET status = 'failed', comment = :comment, completed_at = now(),
        lease_owner = NULL, lease_expires_at = NULL,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND status NOT IN ('completed', 'failed')
    RETURNING id, status, last_event_seq
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[],
                          event_detail => :action_detail)
FROM moved

-- name: task_exists
-- Whether the task exists at all (to tell a missing task from a finished one).
SELECT 1 FROM tasks WHERE id = :task_id
