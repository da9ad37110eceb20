-- Folders, messages with their recipients, and the outgoing queue (DESIGN §7).
CREATE TABLE folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    entry_id BLOB NOT NULL UNIQUE
);
INSERT INTO folders (id, name, entry_id) VALUES
    (1, 'Outbox', X'4D53504C464F4C4400000001'),
    (2, 'Inbox', X'4D53504C464F4C4400000002'),
    (3, 'Sent Items', X'4D53504C464F4C4400000003'),
    (4, 'Deleted Items', X'4D53504C464F4C4400000004');

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    entry_id BLOB NOT NULL UNIQUE,
    folder_id INTEGER NOT NULL REFERENCES folders (id),
    message_class TEXT NOT NULL DEFAULT 'IPM.Note',
    subject TEXT NOT NULL DEFAULT '',
    props TEXT NOT NULL DEFAULT '{}',
    content BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX messages_by_folder ON messages (folder_id, id);

CREATE TABLE recipients (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    row_id INTEGER NOT NULL,
    address TEXT NOT NULL,
    addrtype TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    recipient_type INTEGER NOT NULL,
    responsibility INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,            -- NULL while pending, then 'delivered' or 'failed'
    transport TEXT,          -- the transport that took responsibility
    report_text TEXT,        -- why it failed, for the NDR
    ndr_sent INTEGER NOT NULL DEFAULT 0,
    props TEXT NOT NULL DEFAULT '{}',
    UNIQUE (message_id, row_id)
);

CREATE TABLE queue (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    submit_time REAL NOT NULL,
    not_before REAL,
    expires_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    parked_by TEXT,
    declined TEXT NOT NULL DEFAULT '[]',
    handoff INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE INDEX queue_by_state ON queue (state, submit_time, message_id);

CREATE TABLE dedupe (
    key TEXT PRIMARY KEY,
    message_id INTEGER,
    created_at REAL NOT NULL
);
