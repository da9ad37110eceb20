-- The history of each message, the last known status rows, and transports' durable state.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    entry_id BLOB NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    transport TEXT,
    detail TEXT
);
CREATE INDEX events_by_message ON events (entry_id, id);

CREATE TABLE status_rows (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    props TEXT NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE transport_state (
    transport TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (transport, key)
);

ALTER TABLE queue ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0;
