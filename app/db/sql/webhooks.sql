-- The completion webhooks' outbox: `webhook_deliveries` (one row per delivery, filled by
-- the trigger on tasks that end) and `webhook_attempts` (one row per attempt).
--
-- A delivery is claimed like a task: `FOR UPDATE SKIP LOCKED` and a lease. The claim
-- counts the attempt, and the attempt's result is written fenced by `lease_owner` and
-- that count, so a worker whose lease ran out changes nothing.

-- name: claim_deliveries
-- Lease up to :limit due deliveries to :owner, counting their attempt, round-robin
-- across receiver hosts and at most a host's room to each.
WITH RECURSIVE receivers AS (
    -- Each host with pending deliveries once, one index probe per host (a skip scan of
    -- the (receiver_host, next_attempt_at) index), however many it has pending.
    (SELECT receiver_host AS host FROM webhook_deliveries
     WHERE state = 'pending' ORDER BY receiver_host LIMIT 1)
    UNION ALL
    SELECT (SELECT d.receiver_host FROM webhook_deliveries AS d
            WHERE d.state = 'pending' AND d.receiver_host > r.host
            ORDER BY d.receiver_host LIMIT 1)
    FROM receivers AS r WHERE r.host IS NOT NULL
),
rooms AS (
    -- The hosts with less room than :per_host (slots taken here, breaker open); 0 skips one.
    SELECT * FROM unnest(CAST(:hosts AS text[]), CAST(:rooms AS integer[])) AS l(host, room)
),
due AS (
    SELECT picked.id, picked.next_attempt_at,
           row_number() OVER (PARTITION BY r.host ORDER BY picked.next_attempt_at) AS turn
    FROM receivers AS r
    LEFT JOIN rooms ON rooms.host = r.host
    CROSS JOIN LATERAL (
        -- A host's soonest due deliveries, up to its room; the conditions are checked
        -- again on the row as locked, so two processes never claim one delivery.
        SELECT d.id, d.next_attempt_at FROM webhook_deliveries AS d
        WHERE d.state = 'pending' AND d.receiver_host = r.host
          AND d.next_attempt_at <= now()
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
        ORDER BY d.next_attempt_at
        LIMIT coalesce(rooms.room, CAST(:per_host AS integer))
        FOR UPDATE OF d SKIP LOCKED
    ) AS picked
    WHERE r.host IS NOT NULL
),
chosen AS (
    -- Every host's first before any host's second.
    SELECT id FROM due ORDER BY turn, next_attempt_at LIMIT :limit
)
UPDATE webhook_deliveries AS d
SET lease_owner = :owner,
    lease_expires_at = now() + make_interval(secs => CAST(:lease_seconds AS float8)),
    attempts = d.attempts + 1
FROM chosen
WHERE d.id = chosen.id
RETURNING d.id, d.task_id, d.user_id, d.event_type, d.callback_url, d.receiver_host,
          d.payload, d.attempts, d.created_at,
          extract(epoch FROM now() - d.created_at) AS age;

-- name: store_payload
-- Keep the first body ever stored: every attempt sends exactly those bytes.
UPDATE webhook_deliveries SET payload = coalesce(payload, :body)
WHERE id = :id
RETURNING payload;

-- name: record_attempt
-- Write an attempt and its delivery's next state, only while :owner holds the delivery
-- at this attempt; no row when the lease was lost.
WITH finished AS (
    UPDATE webhook_deliveries
    SET state = CAST(:state AS varchar),
        next_attempt_at = now() + make_interval(secs => CAST(:retry_in AS float8)),
        finished_at = CASE WHEN CAST(:state AS varchar) = 'pending' THEN NULL ELSE now() END,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = :id AND lease_owner = :owner AND attempts = CAST(:attempt AS integer)
    RETURNING id
)
INSERT INTO webhook_attempts
    (delivery_id, attempt, started_at, duration_seconds, status_code, outcome, detail)
SELECT id, CAST(:attempt AS integer), CAST(:started_at AS timestamptz),
       CAST(:duration AS float8), CAST(:status_code AS integer), CAST(:outcome AS varchar),
       CAST(:detail AS text)
FROM finished
RETURNING delivery_id;

-- name: release_deliveries
-- Hand back the pending deliveries :owner claimed and did not finish (at shutdown).
UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL
WHERE id = ANY(:ids) AND lease_owner = :owner AND state = 'pending';

-- name: seconds_until_next_due
-- Seconds until the next pending delivery can be claimed: its retry time, or its lease's
-- end while an attempt holds it; deliveries to the :blocked hosts are left out. Only the
-- first rows of the queue are read, through its index: thousands may wait in an outage.
SELECT extract(epoch FROM min(greatest(next_attempt_at, lease_expires_at)) - now())
FROM (
    SELECT next_attempt_at, lease_expires_at FROM webhook_deliveries
    WHERE state = 'pending' AND receiver_host <> ALL(CAST(:blocked AS text[]))
    ORDER BY next_attempt_at LIMIT 100
) AS first;

-- name: store_limits
-- The limits the outbox trigger applies (NULL: no cap on a user's pending deliveries).
INSERT INTO webhook_limits (id, max_pending_per_user) VALUES (true, :cap)
ON CONFLICT (id) DO UPDATE SET max_pending_per_user = excluded.max_pending_per_user;

-- name: report_dropped
-- Mark finished the deliveries the per-user cap dropped that no process has reported
-- yet, so each is reported once; their users.
UPDATE webhook_deliveries AS d SET finished_at = now()
FROM (
    SELECT id FROM webhook_deliveries
    WHERE state = 'dropped' AND finished_at IS NULL
    ORDER BY created_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AS unreported
WHERE d.id = unreported.id
RETURNING d.user_id;

-- name: expire_overdue
-- End as `expired` the pending deliveries older than :age seconds that no attempt holds
-- (those behind an open breaker would otherwise each wait for a probe).
UPDATE webhook_deliveries AS d
SET state = 'expired', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
FROM (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending'
      AND created_at < now() - make_interval(secs => CAST(:age AS float8))
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AS overdue
WHERE d.id = overdue.id;

-- name: pending_summary
-- Deliveries still to be made, and the age in seconds of the oldest (0: none).
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
FROM webhook_deliveries WHERE state = 'pending';

-- name: task_deliveries
-- A task's deliveries, oldest first.
SELECT id, event_type, callback_url, state, created_at, next_attempt_at, finished_at
FROM webhook_deliveries WHERE task_id = :task_id
ORDER BY created_at, id;

-- name: delivery_attempts
-- The attempts of the deliveries :ids, each delivery's in order.
SELECT delivery_id, attempt, started_at, duration_seconds, status_code, outcome, detail
FROM webhook_attempts WHERE delivery_id = ANY(:ids)
ORDER BY delivery_id, attempt;

-- name: redeliver
-- A new delivery of the same event, callback and payload as :delivery_id, with the
-- status its task is in now.
INSERT INTO webhook_deliveries
    (task_id, user_id, event_type, callback_url, receiver_host, payload)
SELECT task_id, user_id, event_type, callback_url, receiver_host, payload
FROM webhook_deliveries WHERE id = :delivery_id
RETURNING id, task_id,
          (SELECT status FROM tasks WHERE tasks.id = webhook_deliveries.task_id) AS status;
