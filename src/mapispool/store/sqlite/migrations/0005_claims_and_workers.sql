-- Issue #11: claims on in-flight messages (a lease and a fencing token each), the 8-bit
-- flag of a content in canonical form, and status rows kept per worker.

-- The claim an in-flight message is under: its fencing token, until when its lease
-- runs, which worker holds it and the state it was claimed from (where a release puts
-- it back). NULL when the message is not claimed.
ALTER TABLE queue ADD COLUMN claim_token INTEGER;
ALTER TABLE queue ADD COLUMN lease_until REAL;
ALTER TABLE queue ADD COLUMN claimed_by TEXT;
ALTER TABLE queue ADD COLUMN claimed_from TEXT;
-- The last fencing token handed out (tokens only grow).
INSERT INTO store_meta (key, value) VALUES ('claim_token', 0);

-- 1 when the content has bytes above 127 (8BITMIME or an encoding is needed to send it).
ALTER TABLE messages ADD COLUMN eight_bit INTEGER NOT NULL DEFAULT 0;

-- Status rows per worker: each spooler replaces its own rows only.
CREATE TABLE status_rows_by_worker (
    worker TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    props TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (worker, name)
);
INSERT INTO status_rows_by_worker (worker, name, position, props, updated_at)
    SELECT '', name, position, props, updated_at FROM status_rows;
DROP TABLE status_rows;

