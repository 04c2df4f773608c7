-- The reads behind the task streams. A follower sees status transitions only, each
-- with the task's current accuracy and comment.

-- name: latest_transition
-- The task's owner and its last transition: where a new follower starts.
SELECT t.user_id, e.seq, e.status, e.created_at, t.accuracy, t.comment
FROM tasks t
JOIN task_events e ON e.task_id = t.id
WHERE t.id = :task_id AND e.kind = 'status'
ORDER BY e.seq DESC
LIMIT 1

-- name: transitions_after_seq
-- One task's transitions after a sequence number, oldest first: a resuming follower's replay.
SELECT e.task_id, e.seq, e.status, e.created_at, t.accuracy, t.comment
FROM task_events e
JOIN tasks t ON t.id = e.task_id
WHERE e.task_id = :task_id AND e.seq > :after_seq AND e.kind = 'status'
ORDER BY e.seq

-- name: transitions_after_cursors
-- The transitions of several tasks, each after its own sequence number, in one round trip:
-- the hub's read of every task notified since its last read.
SELECT e.task_id, e.seq, e.status, e.created_at, t.accuracy, t.comment
FROM unnest(CAST(:task_ids AS uuid[]), CAST(:after_seqs AS integer[])) AS cursor (task_id, after_seq)
JOIN task_events e ON e.task_id = cursor.task_id AND e.seq > cursor.after_seq
JOIN tasks t ON t.id = e.task_id
WHERE e.kind = 'status'
ORDER BY e.task_id, e.seq

-- name: existing_tasks
-- Which of the given tasks still exist: a followed task that is gone ends its streams.
SELECT id FROM tasks WHERE id = ANY(CAST(:task_ids AS uuid[]))
