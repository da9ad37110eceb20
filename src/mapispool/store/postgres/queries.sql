-- The PostgreSQL store's queries (store/postgres/_sql.py loads them by name). Every
-- connection's search_path is the store's schema. Times are Unix seconds (float8).

-- name: file_message
-- A new message with its content, recipients (row ids from 0, in order), history event
-- and, when state is given, its queue row, and when dedupe_key is given, the link of that
-- (already inserted) key: one statement, so the message's row id stays on the server.
WITH m AS (
    INSERT INTO messages (entry_id, folder_id, message_class, subject, props, size,
                          eight_bit, created_at, canonical)
    VALUES (%(entry_id)s, %(folder_id)s, %(message_class)s, %(subject)s, %(props)s,
            %(size)s, %(eight_bit)s, %(now)s, %(canonical)s)
    RETURNING id
), stored AS (
    INSERT INTO contents (message_id, data, sha256) SELECT id, %(data)s, %(sha256)s FROM m
), addressed AS (
    INSERT INTO recipients (message_id, row_id, address, addrtype, display_name,
                            recipient_type, responsibility, props)
    SELECT m.id, r.ord - 1, r.address, r.addrtype, r.display_name, r.recipient_type,
           r.responsibility, r.props
    FROM m, unnest(%(addresses)s::text[], %(addrtypes)s::text[], %(names)s::text[],
                   %(types)s::integer[], %(responsibility)s::boolean[],
                   %(recipient_props)s::text[])
            WITH ORDINALITY AS r(address, addrtype, display_name, recipient_type,
                                 responsibility, props, ord)
), queued AS (
    INSERT INTO queue (message_id, state, submit_time, not_before, expires_at, due_at,
                       updated_at)
    SELECT id, %(state)s::text, %(now)s, %(not_before)s, %(expires_at)s, %(due_at)s, %(now)s
    FROM m WHERE %(state)s::text IS NOT NULL
), linked AS (
    UPDATE dedupe SET message_id = (SELECT id FROM m) WHERE key = %(dedupe_key)s::text
), logged AS (
    INSERT INTO events (entry_id, at, kind, transport, detail)
    VALUES (%(entry_id)s, %(now)s, %(event)s, NULL, %(event_detail)s)
)
SELECT id FROM m;

-- name: insert_report
-- A generated report (no recipients) and its content in one statement: the message's
-- row id stays on the server, so the statement needs no answer.
WITH m AS (
    INSERT INTO messages (entry_id, folder_id, message_class, subject, props, size,
                          eight_bit, created_at, canonical)
    VALUES (%(entry_id)s, %(folder_id)s, %(message_class)s, %(subject)s, %(props)s,
            %(size)s, false, %(now)s, false)
    RETURNING id
)
INSERT INTO contents (message_id, data, sha256) SELECT id, %(data)s, %(sha256)s FROM m;

-- name: insert_event
INSERT INTO events (entry_id, at, kind, transport, detail) VALUES (%s, %s, %s, %s, %s);

-- name: claim_dedupe_keys
-- An inbound batch's keys, inserted in key order; returns those that were not stored yet.
INSERT INTO dedupe (key, message_id, created_at)
SELECT k, NULL, %(now)s FROM unnest(%(keys)s::text[]) AS k ORDER BY k
ON CONFLICT (key) DO NOTHING
RETURNING key;

-- name: add_dedupe_keys
INSERT INTO dedupe (key, message_id, created_at)
SELECT k, NULL, %(now)s FROM unnest(%(keys)s::text[]) AS k
ON CONFLICT (key) DO NOTHING;

-- name: known_dedupe_keys
SELECT key FROM dedupe WHERE key = ANY(%s::text[]);

-- name: claim_candidates
-- A page of waiting messages in submit order, locked; rows another worker is claiming
-- right now are skipped, not waited for. The route's filter runs in Python on
-- ``pending`` (address types of recipients nobody handles yet), ``declined`` and, for
-- routes by sender, ``sender`` (PR_SENDER_EMAIL_ADDRESS: the props key ``sender_key``).
SELECT q.message_id, q.state, q.submit_time, q.declined,
       ARRAY(SELECT r.addrtype FROM recipients r
             WHERE r.message_id = q.message_id AND r.outcome IS NULL
               AND NOT r.responsibility) AS pending,
       m.props::jsonb ->> %(sender_key)s AS sender
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE q.state IN ('queued', 'deferred', 'retry')
  AND (q.state = 'queued'
       OR (q.state IN ('deferred', 'retry') AND q.not_before <= %(now)s)
       OR (q.state = 'retry' AND %(ignore_backoff)s))
  AND (%(submitted_before)s::float8 IS NULL OR q.submit_time <= %(submitted_before)s::float8)
  AND NOT (m.entry_id = ANY(%(exclude)s::bytea[]))
  AND (q.submit_time, q.message_id) > (%(after_time)s::float8, %(after_id)s::bigint)
ORDER BY q.submit_time, q.message_id
LIMIT %(page)s
FOR UPDATE OF q SKIP LOCKED;

-- name: claim_released
-- Parked messages the transport released (NOTIFY_SENTDEFERRED): claimed before due ones.
SELECT q.message_id, q.state, q.submit_time, q.declined,
       ARRAY(SELECT r.addrtype FROM recipients r
             WHERE r.message_id = q.message_id AND r.outcome IS NULL
               AND NOT r.responsibility) AS pending,
       m.props::jsonb ->> %(sender_key)s AS sender
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE q.state = 'parked' AND q.parked_by = %(transport)s
  AND m.entry_id = ANY(%(released)s::bytea[])
  AND (%(submitted_before)s::float8 IS NULL OR q.submit_time <= %(submitted_before)s::float8)
  AND NOT (m.entry_id = ANY(%(exclude)s::bytea[]))
ORDER BY q.submit_time, q.message_id
FOR UPDATE OF q SKIP LOCKED;

-- name: claim_take
-- Takes the chosen rows and returns everything a transport needs but the recipients
-- (``recipients_of``, sent with this one); an inline content comes with its checksum.
-- ``claimed_from = q.state`` reads the old state: SET sees the row as it was. Each claim
-- is logged as an ``offered`` event naming the worker and the fencing token: which worker
-- held which attempt, for a person reading the history and for the crash test.
WITH taken AS (
    UPDATE queue q SET claimed_from = q.state, state = 'in_flight', attempts = q.attempts + 1,
           token = nextval('claim_tokens'), lease_until = %(lease_until)s,
           lease_seconds = %(lease)s, worker = %(worker)s, handoff = false,
           updated_at = %(stamp)s
    FROM messages m JOIN contents c ON c.message_id = m.id
    WHERE m.id = q.message_id AND q.message_id = ANY(%(ids)s::bigint[])
    RETURNING m.id, m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at,
              q.attempts, q.last_error, q.parked_by, q.declined, m.subject, m.size, m.props,
              m.eight_bit, CASE WHEN m.size <= %(inline_limit)s THEN c.data END, q.token,
              q.claimed_from, m.canonical,
              CASE WHEN m.size <= %(inline_limit)s THEN c.sha256 END AS sha256
), logged AS (
    INSERT INTO events (entry_id, at, kind, transport, detail)
    SELECT entry_id, %(stamp)s, 'offered', %(transport)s,
           'worker ' || %(worker_label)s || ' claim ' || token
    FROM taken
)
SELECT * FROM taken;

-- name: recipients_of
SELECT message_id, row_id, address, addrtype, display_name, recipient_type, responsibility,
       props
FROM recipients WHERE message_id = ANY(%s::bigint[]) ORDER BY message_id, row_id;

-- name: renew
UPDATE queue SET lease_until = %(lease_until)s
WHERE message_id = (SELECT id FROM messages WHERE entry_id = %(entry_id)s)
  AND state = 'in_flight' AND token = %(token)s
RETURNING message_id;

-- name: release
-- Claims given back unused: the state they were claimed from, the attempt given back.
UPDATE queue q SET state = CASE WHEN q.claimed_from = 'in_flight' THEN 'queued'
                                ELSE q.claimed_from END,
       attempts = greatest(q.attempts - 1, 0), token = NULL, lease_until = NULL,
       worker = NULL, handoff = false, updated_at = %(now)s
FROM messages m, unnest(%(entry_ids)s::bytea[], %(tokens)s::bigint[]) AS c(entry_id, token)
WHERE m.entry_id = c.entry_id AND q.message_id = m.id AND q.state = 'in_flight'
  AND q.token = c.token
RETURNING m.entry_id;

-- name: mark_handoff
UPDATE queue SET handoff = %(begun)s
WHERE message_id = (SELECT id FROM messages WHERE entry_id = %(entry_id)s)
  AND (%(token)s::bigint IS NULL OR (state = 'in_flight' AND token = %(token)s::bigint))
RETURNING message_id;

-- name: lock_entry
SELECT q.state, q.token, m.id, q.declined
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE m.entry_id = %s
FOR UPDATE OF q;

-- name: lock_entries
SELECT m.entry_id, q.state, q.token, m.id, q.declined
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE m.entry_id = ANY(%s::bytea[])
ORDER BY q.message_id
FOR UPDATE OF q;

-- name: guard_claims
-- lock_entries for outcomes of claims this worker holds, when it knows their rows: locks
-- them in message order and fails (a division by zero) unless every one is still in
-- flight under its token. The caller then rolls back and reads the rows (lock_entries).
-- The rows are found by primary key; each one's token is the one at its id's position.
SELECT 1 / (count(*) = cardinality(%(ids)s::bigint[]))::integer
FROM (SELECT q.message_id FROM queue q
      WHERE q.message_id = ANY(%(ids)s::bigint[]) AND q.state = 'in_flight'
        AND q.token = (%(tokens)s::bigint[])[array_position(%(ids)s::bigint[], q.message_id)]
      ORDER BY q.message_id
      FOR UPDATE OF q) AS held;

-- name: message_ids
SELECT entry_id, id FROM messages WHERE entry_id = ANY(%s::bytea[]);

-- name: save_recipients
-- save_recipient for several rows of one message in one statement.
UPDATE recipients r SET responsibility = c.responsibility, props = c.props
FROM unnest(%(row_ids)s::integer[], %(responsibility)s::boolean[], %(props)s::text[])
     AS c(row_id, responsibility, props)
WHERE r.message_id = %(message_id)s AND r.row_id = c.row_id;

-- name: set_recipient_outcomes
-- recipient_outcome for several rows of one message in one statement.
UPDATE recipients SET outcome = %(outcome)s, transport = %(transport)s,
       report_text = %(report_text)s, responsibility = true
WHERE message_id = %(message_id)s AND row_id = ANY(%(row_ids)s::integer[]);

-- name: set_declined
UPDATE queue SET declined = %s WHERE message_id = %s;

-- name: change_state_logged
-- A queue entry's new state, its event row and (folder_id not NULL) the move to a folder,
-- in one statement: an outcome's or a person's action.
WITH logged AS (
    INSERT INTO events (entry_id, at, kind, transport, detail)
    VALUES (%(entry_id)s, %(now)s, %(kind)s, %(transport)s, %(detail)s)
), moved AS (
    UPDATE messages SET folder_id = %(folder_id)s::integer
    WHERE id = %(message_id)s AND %(folder_id)s::integer IS NOT NULL
)
UPDATE queue SET state = %(state)s, not_before = %(not_before)s,
       last_error = CASE WHEN %(state)s = 'sent' THEN NULL ELSE coalesce(%(error)s, last_error) END,
       parked_by = %(parked_by)s,
       attempts = attempts + %(attempt)s, handoff = false, token = NULL, lease_until = NULL,
       worker = NULL, updated_at = %(now)s
WHERE message_id = %(message_id)s;

-- name: delete_message_by_id
DELETE FROM messages WHERE id = %s;

-- name: mark_ndr_sent
UPDATE recipients SET ndr_sent = true WHERE message_id = %s AND row_id = %s;

-- name: mark_delay_notified
UPDATE queue SET delay_notified = true WHERE message_id = %s;

-- name: recover_candidates
SELECT m.id, m.entry_id, q.state, q.handoff,
       (SELECT count(*) FROM recipients r WHERE r.message_id = m.id AND r.outcome IS NULL)
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE (q.state = 'in_flight' AND (
          q.lease_until < %(now)s::float8
          -- now NULL: every claim no other live worker holds (this worker's own, unnamed
          -- ones, dead workers'); a live worker's claims are never taken from it.
          OR (%(now)s::float8 IS NULL AND (
              coalesce(q.worker, '') IN ('', %(me)s)
              OR NOT EXISTS (SELECT 1 FROM workers w
                             WHERE w.name = q.worker AND w.heartbeat_at >= %(alive_after)s)))))
   OR (q.state = 'parked' AND %(parked)s)
FOR UPDATE OF q SKIP LOCKED;

-- name: recover_one
UPDATE queue SET state = %s, handoff = false, parked_by = NULL, last_error = %s,
       token = NULL, lease_until = NULL, worker = NULL, updated_at = %s
WHERE message_id = %s;

-- name: reopen_failed_recipients
UPDATE recipients SET outcome = NULL, report_text = NULL, ndr_sent = false,
       responsibility = false, transport = NULL
WHERE message_id = %s AND outcome = 'failed';

-- name: reopen_queue
UPDATE queue SET expires_at = %s, due_at = %s, declined = '{}', delay_notified = false
WHERE message_id = %s;

-- name: queue_select
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id;

-- name: message_select
SELECT m.id, m.entry_id, f.name, m.props, c.data
FROM messages m JOIN contents c ON c.message_id = m.id JOIN folders f ON f.id = m.folder_id;

-- name: register_worker
INSERT INTO workers (name, host, pid, started_at, heartbeat_at)
VALUES (%(name)s, %(host)s, %(pid)s, %(now)s, %(now)s)
ON CONFLICT (name) DO UPDATE
    SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
        heartbeat_at = excluded.heartbeat_at
    WHERE workers.heartbeat_at < %(dead_before)s
RETURNING name;

-- name: heartbeat
UPDATE workers SET heartbeat_at = %(now)s WHERE name = %(name)s AND pid = %(pid)s
RETURNING name;

-- name: renew_worker_claims
-- Rows locked right now are skipped, never waited for: their outcome is being recorded (or
-- they are being recovered), and waiting here could deadlock with that transaction.
UPDATE queue SET lease_until = %(now)s + lease_seconds
WHERE message_id IN (SELECT message_id FROM queue
                     WHERE state = 'in_flight' AND worker = %(name)s
                     FOR UPDATE SKIP LOCKED);

-- name: forget_dead_workers
-- Several live workers may beat at once: each forgets the dead ones nobody else is
-- forgetting right now (SKIP LOCKED), so they never wait for each other.
WITH dead AS (
    DELETE FROM workers WHERE name IN (
        SELECT name FROM workers WHERE heartbeat_at < %(dead_before)s
        FOR UPDATE SKIP LOCKED)
    RETURNING name)
DELETE FROM status_rows WHERE worker IN (SELECT name FROM dead);

-- name: unregister_worker
WITH gone AS (DELETE FROM workers WHERE name = %(name)s AND pid = %(pid)s RETURNING name)
DELETE FROM status_rows WHERE worker IN (SELECT name FROM gone);

-- name: live_workers
SELECT name, host, pid, started_at, heartbeat_at FROM workers
WHERE heartbeat_at >= %s ORDER BY name;

-- name: load_status_rows
-- A worker's rows count while it lives; rows saved without a worker name (a spooler that
-- did not register, such as a one-off flush) always show.
SELECT s.props FROM status_rows s LEFT JOIN workers w ON w.name = s.worker
WHERE s.worker = '' OR w.heartbeat_at >= %s
ORDER BY s.worker, s.position;

-- name: load_worker_status_rows
SELECT s.worker, s.props FROM status_rows s LEFT JOIN workers w ON w.name = s.worker
WHERE s.worker = '' OR w.heartbeat_at >= %s
ORDER BY s.worker, s.position;

-- name: count_folder
SELECT count(*) FROM messages WHERE folder_id = %s;

-- name: move_message
UPDATE messages SET folder_id = %s WHERE entry_id = %s RETURNING id;

-- name: delete_message
DELETE FROM messages WHERE entry_id = %s;

-- name: pending_types
SELECT message_id, addrtype FROM recipients
WHERE NOT responsibility AND outcome IS NULL AND message_id = ANY(%s)
ORDER BY message_id, row_id;

-- name: recipient_outcomes
SELECT r.row_id, r.outcome, r.report_text, r.ndr_sent
FROM recipients r JOIN messages m ON m.id = r.message_id
WHERE m.entry_id = %s ORDER BY r.row_id;

-- name: message_exists
SELECT 1 FROM messages WHERE entry_id = %s;

-- name: next_wakeup
SELECT min(not_before) FROM queue WHERE state IN ('deferred', 'retry');

-- name: count_by_state
SELECT state, count(*) FROM queue GROUP BY state;

-- name: events
SELECT at, kind, transport, detail FROM events WHERE entry_id = %s ORDER BY id;

-- name: get_transport_state
SELECT value FROM transport_state WHERE transport = %s AND key = %s;

-- name: set_transport_state
INSERT INTO transport_state (transport, key, value) VALUES (%s, %s, %s)
ON CONFLICT (transport, key) DO UPDATE SET value = excluded.value;

-- name: clear_status_rows
DELETE FROM status_rows WHERE worker = %s;

-- name: insert_status_row
INSERT INTO status_rows (worker, name, position, props, updated_at)
VALUES (%s, %s, %s, %s, %s);

-- name: content_head
SELECT c.message_id, m.size, c.sha256
FROM contents c JOIN messages m ON m.id = c.message_id WHERE m.entry_id = %s;

-- name: content_piece
SELECT substring(data FROM %s FOR %s) FROM contents WHERE message_id = %s;

-- name: try_advisory_lock
SELECT pg_try_advisory_lock(%s, hashtext(%s));

-- name: advisory_unlock
SELECT pg_advisory_unlock(%s, hashtext(%s));

-- name: notify_submitted
SELECT pg_notify(%s, '');

-- name: sync_barrier
-- A transaction id makes the commit wait for the WAL flush, and with it every
-- earlier commit's (synchronous_commit = off ones included).
SELECT pg_current_xact_id();
