-- Issue #10: the lifetime counts from when a message becomes due; a checksum of each
-- stored content; a counter of submissions to notice a store that lost commits.

-- When the message became (or becomes) due: the later of its submit time and its
-- PR_DEFERRED_SEND_TIME (tag 1072627776, kept as ISO text in props). Delay warnings count
-- from it; expiry is due_at + lifetime.
ALTER TABLE queue ADD COLUMN due_at REAL;
UPDATE queue SET due_at = max(submit_time, coalesce(
    (SELECT (julianday(json_extract(m.props, '$."1072627776"."$t"')) - 2440587.5) * 86400.0
     FROM messages m WHERE m.id = queue.message_id),
    submit_time));
-- Older versions counted the lifetime from submission: move it by the deferral.
UPDATE queue SET expires_at = expires_at + (due_at - submit_time)
    WHERE due_at > submit_time AND state NOT IN ('sent', 'failed', 'cancelled');
-- Messages those versions expired while they still waited for their send time stayed
-- 'deferred' forever with every recipient failed: their recipients become pending again,
-- and the history says why (the NDR they got was wrong).
INSERT INTO events (entry_id, at, kind, transport, detail)
    SELECT m.entry_id, (julianday('now') - 2440587.5) * 86400.0, 'expiry-corrected', NULL,
        'the lifetime now counts from the send time, so the earlier NDR was sent in error'
    FROM queue q JOIN messages m ON m.id = q.message_id
    WHERE q.state = 'deferred' AND EXISTS (SELECT 1 FROM recipients r
        WHERE r.message_id = q.message_id AND r.outcome = 'failed'
        AND r.report_text LIKE 'gave up after the message lifetime%');
UPDATE recipients SET outcome = NULL, report_text = NULL, ndr_sent = 0, responsibility = 0,
        transport = NULL
    WHERE outcome = 'failed' AND report_text LIKE 'gave up after the message lifetime%'
    AND message_id IN (SELECT message_id FROM queue WHERE state = 'deferred');

-- SHA-256 of each content, taken when it is stored and checked before it is sent. NULL
-- for contents stored by older versions (nothing to check them against).
ALTER TABLE contents ADD COLUMN sha256 BLOB;

-- Small facts about the store itself. 'submitted' counts every submission, in the same
-- transaction as the submission; a copy of it outside the database (the .seq file next
-- to the store) tells on the next start whether committed submissions were lost.
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('submitted', 0);
