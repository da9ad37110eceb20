-- The SQLite store's queries, by name (loaded once by queries.py). Each query starts
-- with a "-- name: <name>" line; the comment lines after it say what it does.
-- Parameters are named (:name) so that a query reads on its own.

-- name: folders
SELECT id, name, entry_id FROM folders;

-- name: message_id
SELECT id FROM messages WHERE entry_id = :entry_id;

-- name: insert_message
INSERT INTO messages (entry_id, folder_id, message_class, subject, props, content, size,
                      created_at, eight_bit, canonical)
VALUES (:entry_id, :folder_id, :message_class, :subject, :props, X'', :size, :now,
        :eight_bit, :canonical);

-- name: insert_content
-- The content has a table of its own: later UPDATEs of the message row (a move to Sent
-- Items, new properties) never rewrite a large blob.
INSERT INTO contents (message_id, data, sha256) VALUES (:message_id, :data, :sha256);

-- name: insert_recipient
INSERT INTO recipients (message_id, row_id, address, addrtype, display_name,
                        recipient_type, responsibility, props)
VALUES (:message_id, :row_id, :address, :addrtype, :display_name, :recipient_type,
        :responsibility, :props);

-- name: insert_queue
INSERT INTO queue (message_id, state, submit_time, not_before, expires_at, due_at,
                   updated_at)
VALUES (:message_id, :state, :submit_time, :not_before, :expires_at, :due_at, :submit_time);

-- name: count_submission
UPDATE store_meta SET value = value + 1 WHERE key = 'submitted' RETURNING value;

-- name: count_submissions
-- A group of :count submissions committed together.
UPDATE store_meta SET value = value + :count WHERE key = 'submitted' RETURNING value;

-- name: next_tokens
-- Reserve :count fencing tokens; returns the last one.
UPDATE store_meta SET value = value + :count WHERE key = 'claim_token' RETURNING value;

-- name: insert_event
INSERT INTO events (entry_id, at, kind, transport, detail)
VALUES (:entry_id, :at, :kind, :transport, :detail);

-- name: insert_dedupe
-- Nothing is inserted (no row comes back) when the key is stored already.
INSERT INTO dedupe (key, message_id, created_at) VALUES (:key, :message_id, :now)
ON CONFLICT (key) DO NOTHING RETURNING key;

-- name: insert_dedupe_linked
-- Only for keys the same transaction found absent (Store.deliver).
INSERT INTO dedupe (key, message_id, created_at) VALUES (:key, :message_id, :now);

-- name: add_dedupe_key
INSERT OR IGNORE INTO dedupe (key, message_id, created_at) VALUES (:key, NULL, :now);

-- name: sync_touch
-- A commit that changes nothing writes no WAL frame and so syncs nothing: the barrier
-- writes and removes a row.
INSERT OR REPLACE INTO transport_state (transport, key, value) VALUES ('', 'sync', '0');

-- name: sync_untouch
DELETE FROM transport_state WHERE transport = '' AND key = 'sync';

-- name: queue_row
-- One queue entry for a state change: its state, claim and message row id.
SELECT q.state, m.id, q.claim_token, q.declined
FROM queue q JOIN messages m ON m.id = q.message_id WHERE m.entry_id = :entry_id;

-- name: set_state
UPDATE queue SET state = :state, not_before = :not_before,
    last_error = CASE WHEN :state = 'sent' THEN NULL ELSE coalesce(:error, last_error) END,
    parked_by = :parked_by,
    attempts = attempts + :attempt, handoff = 0, updated_at = :now,
    claim_token = :token, lease_until = :lease_until, claimed_by = :claimed_by,
    claimed_from = :claimed_from
WHERE message_id = :message_id;

-- name: set_handoff
UPDATE queue SET handoff = :begun WHERE message_id = :message_id;

-- name: mark_handoff
-- The start of a hand-over under its claim in one statement (the hot path); no row
-- changed: the message left the queue or the claim is not current (``_set_handoff`` says
-- which).
UPDATE queue SET handoff = 1
WHERE message_id = (SELECT id FROM messages WHERE entry_id = :entry_id)
    AND (:token IS NULL OR claim_token = :token);

-- name: set_declined
UPDATE queue SET declined = :declined WHERE message_id = :message_id;

-- name: save_recipient
UPDATE recipients SET responsibility = :responsibility, props = :props
WHERE message_id = :message_id AND row_id = :row_id;

-- name: set_recipient_outcome
UPDATE recipients SET outcome = :outcome, transport = :transport,
    report_text = :report_text, responsibility = 1
WHERE message_id = :message_id AND row_id = :row_id;

-- name: mark_ndr_sent
UPDATE recipients SET ndr_sent = 1 WHERE message_id = :message_id AND row_id = :row_id;

-- name: mark_delay_notified
UPDATE queue SET delay_notified = 1 WHERE message_id = :message_id;

-- name: move_message
UPDATE messages SET folder_id = :folder_id WHERE id = :message_id;

-- name: delete_message
DELETE FROM messages WHERE id = :message_id;

-- name: reopen_failed
-- A person sends a failed message again: its failed recipients pending again, a new
-- lifetime.
UPDATE recipients SET outcome = NULL, report_text = NULL, ndr_sent = 0, responsibility = 0,
    transport = NULL
WHERE message_id = :message_id AND outcome = 'failed';

-- name: reopen_queue
UPDATE queue SET expires_at = :expires_at, due_at = :now, declined = '[]',
    delay_notified = 0
WHERE message_id = :message_id;

-- name: renew
UPDATE queue SET lease_until = :lease_until
WHERE message_id = (SELECT id FROM messages WHERE entry_id = :entry_id)
  AND claim_token = :token AND state = 'in_flight';

-- name: stranded
-- In-flight (and, with :parked, parked) messages for recover, with how many recipients
-- have no outcome.
SELECT m.id, m.entry_id, q.state, q.handoff,
       (SELECT count(*) FROM recipients r WHERE r.message_id = m.id AND r.outcome IS NULL)
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE (q.state = 'in_flight' AND (:before IS NULL OR coalesce(q.lease_until, 0) < :before))
   OR (:parked AND q.state = 'parked');

-- name: recovered
UPDATE queue SET state = :state, handoff = 0, parked_by = NULL, last_error = :why,
    updated_at = :now, claim_token = NULL, lease_until = NULL, claimed_by = NULL,
    claimed_from = NULL
WHERE message_id = :message_id;

-- name: transport_state
SELECT value FROM transport_state WHERE transport = :transport AND key = :key;

-- name: set_transport_state
INSERT INTO transport_state (transport, key, value) VALUES (:transport, :key, :value)
ON CONFLICT (transport, key) DO UPDATE SET value = excluded.value;

-- name: clear_status_rows
DELETE FROM status_rows_by_worker WHERE worker = :worker;

-- name: insert_status_row
INSERT INTO status_rows_by_worker (worker, name, position, props, updated_at)
VALUES (:worker, :name, :position, :props, :now);

-- name: status_rows
SELECT props FROM status_rows_by_worker ORDER BY worker, position;

-- name: events
SELECT at, kind, transport, detail FROM events WHERE entry_id = :entry_id ORDER BY id;

-- name: recipients
SELECT message_id, row_id, address, addrtype, display_name, recipient_type, responsibility,
       props
FROM recipients WHERE message_id = :message_id ORDER BY row_id;

-- name: recipient_addresses
SELECT addrtype, address FROM recipients WHERE message_id = :message_id ORDER BY row_id;

-- name: recipient_outcomes
SELECT row_id, outcome, report_text, ndr_sent FROM recipients
WHERE message_id = :message_id ORDER BY row_id;

-- name: folder_messages
SELECT m.id, m.entry_id, m.props, c.data FROM messages m
JOIN contents c ON c.message_id = m.id
WHERE m.folder_id = :folder_id AND m.id > :after ORDER BY m.id LIMIT :limit;

-- name: message_count
SELECT count(*) FROM messages WHERE folder_id = :folder_id;

-- name: message
SELECT m.id, m.folder_id, m.props, CASE WHEN :content THEN c.data ELSE X'' END
FROM messages m JOIN contents c ON c.message_id = m.id WHERE m.entry_id = :entry_id;

-- name: content_ref
SELECT c.message_id, c.sha256 FROM contents c JOIN messages m ON m.id = c.message_id
WHERE m.entry_id = :entry_id;

-- name: next_wakeup
SELECT min(not_before) FROM queue WHERE state IN ('deferred', 'retry');

-- name: count_by_state
SELECT state, count(*) FROM queue GROUP BY state;

-- Queue queries. Every one returns the columns of a QueueEntry, in submit order
-- ((submit_time, message row id), paged with :after_time/:after_seq and :limit).

-- name: queue_entry
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id WHERE m.entry_id = :entry_id;

-- name: queue_page
-- :states is a JSON list of states, or NULL for every unfinished one.
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE (CASE WHEN :states IS NULL THEN q.state NOT IN ('sent', 'cancelled')
            ELSE q.state IN (SELECT value FROM json_each(:states)) END)
  AND (q.submit_time, q.message_id) > (:after_time, :after_seq)
ORDER BY q.submit_time, q.message_id LIMIT :limit;

-- name: due_entries
-- Queued messages, send-later ones whose time has come, retries whose backoff has
-- passed (every retry with :ignore_backoff). One ordered index range per state, each
-- cut at :limit, then merged: a page costs :limit rows per state, not the queue.
SELECT * FROM (
    SELECT * FROM (
        SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
               q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
        FROM queue q JOIN messages m ON m.id = q.message_id
        WHERE q.state = 'queued' AND (q.submit_time, q.message_id) > (:after_time, :after_seq)
        ORDER BY q.submit_time, q.message_id LIMIT :limit)
    UNION ALL
    SELECT * FROM (
        SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
               q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
        FROM queue q JOIN messages m ON m.id = q.message_id
        WHERE q.state = 'deferred' AND q.not_before <= :now
          AND (q.submit_time, q.message_id) > (:after_time, :after_seq)
        ORDER BY q.submit_time, q.message_id LIMIT :limit)
    UNION ALL
    SELECT * FROM (
        SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
               q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
        FROM queue q JOIN messages m ON m.id = q.message_id
        WHERE q.state = 'retry' AND (:ignore_backoff OR q.not_before <= :now)
          AND (q.submit_time, q.message_id) > (:after_time, :after_seq)
        ORDER BY q.submit_time, q.message_id LIMIT :limit)
)
ORDER BY 3, 12 LIMIT :limit;

-- name: parked_entries
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE q.state = 'parked' AND q.parked_by = :transport
  AND (q.submit_time, q.message_id) > (:after_time, :after_seq)
ORDER BY q.submit_time, q.message_id LIMIT :limit;

-- name: overdue_entries
-- Waiting messages past their lifetime (a send-later one still waiting is never here).
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE q.state IN ('queued', 'retry') AND q.expires_at <= :now
ORDER BY q.submit_time, q.message_id LIMIT :limit;

-- name: settled_entries
-- Queued or retrying messages none of whose recipients is pending.
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE q.state IN ('queued', 'retry')
  AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.outcome IS NULL)
ORDER BY q.submit_time, q.message_id LIMIT :limit;

-- name: delayed_entries
-- Messages still waiting, tried at least once, due before :due_before, not yet reported.
SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,
       q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id
FROM queue q JOIN messages m ON m.id = q.message_id
WHERE q.state IN ('queued', 'retry') AND q.attempts > 0 AND q.delay_notified = 0
  AND coalesce(q.due_at, q.submit_time) <= :due_before
ORDER BY q.submit_time, q.message_id LIMIT :limit;

-- name: pending_types
-- For message row ids in the JSON list :seqs, the address types of pending recipients.
SELECT message_id, addrtype FROM recipients
WHERE responsibility = 0 AND outcome IS NULL
  AND message_id IN (SELECT value FROM json_each(:seqs));

-- name: message_senders
-- For message row ids in the JSON list :seqs, the envelope sender (the props key :path,
-- PR_SENDER_EMAIL_ADDRESS), for claims that route by sender.
SELECT id, json_extract(props, :path) FROM messages
WHERE id IN (SELECT value FROM json_each(:seqs));

-- name: claim_message
-- Move one claimed message to in flight under its claim, counting the attempt.
UPDATE queue SET state = 'in_flight', attempts = attempts + 1, handoff = 0,
    updated_at = :now, claim_token = :token, lease_until = :lease_until,
    claimed_by = :worker, claimed_from = state
WHERE message_id = :message_id;

-- name: claimed_messages
-- Props, the 8-bit and canonical flags and (when small enough) the content of claimed
-- messages.
SELECT m.id, m.props, m.eight_bit, m.canonical,
       CASE WHEN m.size <= :inline_limit THEN c.data END, c.sha256
FROM messages m JOIN contents c ON c.message_id = m.id
WHERE m.id IN (SELECT value FROM json_each(:seqs));

-- name: claimed_recipients
SELECT message_id, row_id, address, addrtype, display_name, recipient_type, responsibility,
       props
FROM recipients WHERE message_id IN (SELECT value FROM json_each(:seqs))
ORDER BY message_id, row_id;

-- name: unclaim
UPDATE queue SET state = :state, attempts = max(attempts - 1, 0), updated_at = :now,
    claim_token = NULL, lease_until = NULL, claimed_by = NULL, claimed_from = NULL
WHERE message_id = :message_id AND claim_token = :token AND state = 'in_flight';

-- name: link_dedupe
UPDATE dedupe SET message_id = :message_id WHERE key = :key;

-- name: known_dedupe_keys
SELECT key FROM dedupe WHERE key IN (SELECT value FROM json_each(:keys));
