-- The task row as the pipeline's job: the claim, leases, stage outputs, retries, failure.
-- Run on `Database.driver()` connections, outside a transaction unless a statement says.
-- Every write after the claim is fenced by `lease_owner = :owner`: a worker that lost its
-- lease changes nothing. A write that moves a task raises `last_event_seq` and records
-- the move with `record_task_events` in the same statement, so it is all-or-nothing
-- without a transaction of its own. Functions used here come from migration 0006.

-- name: begin_claim
-- The claim's transaction. Claims share no lock: each serialises on the `queue_users` row
-- of the user it serves, and a claim whose snapshot predates another's commit for that
-- user fails with a serialization error and is run again with a fresh snapshot.
BEGIN ISOLATION LEVEL REPEATABLE READ

-- name: claim_next_task
-- Lease the oldest runnable task of the user waiting longest below the per-user cap to
-- :owner, move it into the stage it resumes at and record that, in one statement.
WITH locks AS MATERIALIZED (
    -- One read of the lock table per statement, however many tasks it looks at.
    SELECT held_keys, server FROM owner_locks()
),
candidate AS (
    -- Users, not tasks, are walked, in the order of their oldest unfinished task (kept by
    -- triggers, migration 0002): a backlog of any size costs one index probe.
    SELECT pick.*, locks.server FROM locks CROSS JOIN queue_users u
    CROSS JOIN LATERAL (
        SELECT t.id, t.status, t.result, t.claim_count, t.lease_expires_at FROM tasks t
        WHERE t.user_id = u.user_id
          AND t.status NOT IN ('completed', 'failed')
          AND t.run_after <= now()
          -- Free, expired, or held by an owner whose process is gone.
          AND (
              t.lease_owner IS NULL
              OR t.lease_expires_at < now()
              OR lease_is_dead(t.lease_owner, t.leased_on, locks.held_keys, locks.server)
          )
        ORDER BY t.created_at, t.id
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED
    ) pick
    WHERE u.oldest_unfinished_at IS NOT NULL
      -- Only while this process holds its own lock: every lease it stamps is taken under it.
      AND owner_lock_held(:owner, locks.held_keys)
      -- The per-user cap counts live leases only.
      AND (
          SELECT count(*) FROM tasks busy
          WHERE busy.user_id = u.user_id
            AND busy.lease_owner IS NOT NULL
            AND busy.lease_expires_at >= now()
            AND NOT lease_is_dead(busy.lease_owner, busy.leased_on, locks.held_keys, locks.server)
      ) < :per_user
    ORDER BY u.oldest_unfinished_at, u.user_id
    LIMIT 1
    -- A user being claimed for elsewhere is passed over, not waited for.
    FOR UPDATE OF u SKIP LOCKED
),
resumed AS (
    SELECT candidate.*,
           -- A lease still set is one whose holder vanished mid-task; retries and
           -- shutdown hand-backs clear the lease, so they do not count.
           candidate.claim_count + (candidate.lease_expires_at IS NOT NULL)::int
               AS new_claim_count,
           EXISTS (
               SELECT 1 FROM task_audio wav
               WHERE wav.task_id = candidate.id AND wav.kind = 'preprocessed'
           ) AS has_preprocessed_audio
    FROM candidate
),
entry AS (
    -- The first stage without output; a task interrupted :max_claims times stays put
    -- (the worker fails it next).
    SELECT resumed.*,
           CASE WHEN resumed.new_claim_count >= :max_claims THEN resumed.status
                WHEN NOT resumed.has_preprocessed_audio THEN 'preprocessing'
                WHEN resumed.result IS NULL THEN 'transcribing'
                ELSE 'evaluating'
           END AS entered
    FROM resumed
),
steps AS (
    -- The statuses entered, in order: a new task passes through `started`.
    SELECT entry.*,
           array_remove(ARRAY[
               CASE WHEN entry.status = 'created' AND entry.entered <> 'created'
                    THEN 'started' END,
               CASE WHEN entry.entered <> entry.status THEN entry.entered END
           ]::text[], NULL) AS steps
    FROM entry
),
claimed AS (
    UPDATE tasks SET
        lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => :lease),
        leased_at = now(),
        leased_on = steps.server,
        claim_count = steps.new_claim_count,
        status = steps.entered,
        last_event_seq = tasks.last_event_seq + cardinality(steps.steps),
        updated_at = CASE WHEN cardinality(steps.steps) > 0 THEN now()
                          ELSE tasks.updated_at END
    FROM steps WHERE tasks.id = steps.id
    RETURNING tasks.id, tasks.user_id, tasks.text_id, tasks.status, tasks.stage_attempts,
              tasks.claim_count, tasks.result, tasks.created_at, tasks.last_event_seq,
              steps.has_preprocessed_audio, steps.steps
),
serialised AS (
    -- The write that other claims for this user conflict with (see begin_claim).
    UPDATE queue_users q SET oldest_unfinished_at = q.oldest_unfinished_at
    FROM claimed WHERE q.user_id = claimed.user_id
    RETURNING q.user_id
)
SELECT claimed.id, claimed.user_id, claimed.text_id, claimed.status,
       claimed.stage_attempts, claimed.claim_count, claimed.result, claimed.created_at,
       claimed.has_preprocessed_audio,
       record_task_events(claimed.id, claimed.last_event_seq, claimed.steps) AS events
FROM claimed

-- name: stage_audio
-- The input of a claimed task's next stage: the upload, or the preprocessed WAV.
SELECT content FROM task_audio WHERE task_id = :task_id AND kind = :kind

-- name: store_preprocessed_audio
-- Keep the WAV and move the task from :expected_status to :next_status, recorded. The
-- writes that keep the lease are also fenced by the stage they finish: a retry after an
-- ambiguous commit finds the task moved on and changes nothing.
WITH moved AS (
    UPDATE tasks SET status = :next_status, stage_attempts = 0,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND lease_owner = :owner AND status = :expected_status
    RETURNING id, status, last_event_seq
),
stored AS (
    INSERT INTO task_audio (task_id, kind, content, filename, content_type, size)
    SELECT moved.id, 'preprocessed', CAST(:wav AS bytea), 'audio.wav', 'audio/wav',
           CAST(:size AS integer)
    FROM moved
    ON CONFLICT (task_id, kind) DO UPDATE SET content = EXCLUDED.content, size = EXCLUDED.size
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[])
FROM moved

-- name: store_transcription
-- Keep the transcription and move the task from :expected_status to :next_status, recorded.
WITH moved AS (
    UPDATE tasks SET status = :next_status, result = :result, stage_attempts = 0,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND lease_owner = :owner AND status = :expected_status
    RETURNING id, status, last_event_seq
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[])
FROM moved

-- name: complete_task
-- Store the assessment and end the task, recorded, releasing the lease. With
-- :drop_audio (a retention of 0) its audio goes in the same statement, so no finished
-- task holds audio at any moment, and a task that did not end keeps it.
WITH moved AS (
    UPDATE tasks SET status = :next_status, accuracy = :accuracy, mistakes = :mistakes,
        comment = NULL, completed_at = now(), stage_attempts = 0,
        lease_owner = NULL, lease_expires_at = NULL,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND lease_owner = :owner AND status = :expected_status
    RETURNING id, status, last_event_seq
),
dropped AS (
    DELETE FROM task_audio WHERE task_id IN (SELECT id FROM moved) AND :drop_audio
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[])
FROM moved

-- name: fail_task
-- End the task as failed with :comment, recorded with :failure as the event's detail;
-- the only write that checks the status: a task that finished meanwhile stays finished.
WITH moved AS (
    UPDATE tasks SET status = :next_status, comment = :comment, completed_at = now(),
        lease_owner = NULL, lease_expires_at = NULL,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND lease_owner = :owner AND status NOT IN ('completed', 'failed')
    RETURNING id, status, last_event_seq
),
dropped AS (
    DELETE FROM task_audio WHERE task_id IN (SELECT id FROM moved) AND :drop_audio
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[],
                          event_detail => :failure)
FROM moved

-- name: release_for_retry
-- Give the task back with a not-before time, recording a `retry` event with the stage,
-- the attempt and the reason.
WITH moved AS (
    UPDATE tasks SET stage_attempts = :attempts,
        run_after = now() + make_interval(secs => :delay),
        lease_owner = NULL, lease_expires_at = NULL,
        last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING id, status, last_event_seq
)
SELECT moved.last_event_seq,
       record_task_events(moved.id, moved.last_event_seq, ARRAY[moved.status]::text[],
                          event_kind => 'retry', event_stage => :stage,
                          event_attempt => :attempts, event_detail => :reason)
FROM moved

-- name: moved_to
-- Is the task at :status under :owner's lease? A completed task no longer names its
-- owner: completion is final, whoever wrote it.
SELECT 1 FROM tasks
WHERE id = :task_id AND status = :status AND (lease_owner = :owner OR status = 'completed')

-- name: seconds_until_next_due
-- How long until some unfinished task becomes claimable. Only future times count: a task
-- due already but not claimable waits for its user's work to finish, not for a time.
SELECT EXTRACT(EPOCH FROM min(due) - now()) FROM (
    SELECT greatest(run_after, coalesce(lease_expires_at, run_after)) AS due
    FROM tasks WHERE status NOT IN ('completed', 'failed')
) pending
WHERE due > now()

-- name: renew_lease
-- Extend :owner's lease on the task; it is stamped as taken under the owner's lock (time
-- and server) only while that lock is held, else only the clock moves.
WITH locks AS MATERIALIZED (
    SELECT held_keys, server FROM owner_locks()
)
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease),
    leased_at = CASE WHEN owner_lock_held(:owner, locks.held_keys)
                     THEN now() ELSE leased_at END,
    leased_on = CASE WHEN owner_lock_held(:owner, locks.held_keys)
                     THEN locks.server ELSE leased_on END
FROM locks
WHERE id = :task_id AND lease_owner = :owner
RETURNING id

-- name: release_lease
-- Hand one unfinished task back at once (graceful shutdown).
UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL
WHERE id = :task_id AND lease_owner = :owner

-- name: release_all_leases
-- Hand back every task :owner still holds.
UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = :owner
RETURNING id

-- name: purge_expired_audio
-- Delete the audio of tasks that ended more than :age seconds ago; only terminal tasks
-- lose audio. A finished row without `completed_at` (an older release) counts from its
-- last update.
DELETE FROM task_audio a USING tasks t
WHERE a.task_id = t.id AND t.status IN ('completed', 'failed')
  AND coalesce(t.completed_at, t.updated_at) <= now() - make_interval(secs => :age)
RETURNING a.task_id

-- name: waiting_summary
-- Unfinished tasks nobody holds, and the age in seconds of the oldest of them.
SELECT count(*), coalesce(EXTRACT(EPOCH FROM now() - min(created_at)), 0)
FROM tasks
WHERE status NOT IN ('completed', 'failed')
  AND (lease_expires_at IS NULL OR lease_expires_at < now())

-- name: server_identity
-- The server the liveness lock is about to be taken on (NULL on a standby).
SELECT server_identity()

-- name: try_owner_lock
-- Take :owner's liveness lock on this session, if it is free.
SELECT pg_try_advisory_lock(owner_lock_key(:owner))
