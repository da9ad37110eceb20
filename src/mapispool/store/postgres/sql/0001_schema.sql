-- The PostgreSQL store (DESIGN §9): the same folders, messages, queue, dedupe keys, events,
-- status rows and transport state as the SQLite store, plus what many workers need: a
-- fencing token and a lease on every claim, and a registry of live workers.
-- Every statement runs with search_path set to the store's schema.
CREATE TABLE folders (
    id integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    entry_id bytea NOT NULL UNIQUE
);
INSERT INTO folders (id, name, entry_id) VALUES
    (1, 'Outbox', '\x4d53504c464f4c4400000001'),
    (2, 'Inbox', '\x4d53504c464f4c4400000002'),
    (3, 'Sent Items', '\x4d53504c464f4c4400000003'),
    (4, 'Deleted Items', '\x4d53504c464f4c4400000004');

-- id is the message's seq: it breaks ties in submit order and pages folders and the queue.
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    entry_id bytea NOT NULL UNIQUE,
    folder_id integer NOT NULL REFERENCES folders (id),
    message_class text NOT NULL DEFAULT 'IPM.Note',
    subject text NOT NULL DEFAULT '',
    props text NOT NULL DEFAULT '{}',
    size bigint NOT NULL,
    eight_bit boolean NOT NULL DEFAULT false,
    created_at double precision NOT NULL
);
CREATE INDEX messages_by_folder ON messages (folder_id, id);

-- Apart from the message row, so that a move or new properties never rewrite the content.
CREATE TABLE contents (
    message_id bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    data bytea NOT NULL,
    sha256 bytea
);

CREATE TABLE recipients (
    message_id bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    row_id integer NOT NULL,
    address text NOT NULL,
    addrtype text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    recipient_type integer NOT NULL,
    responsibility boolean NOT NULL DEFAULT false,
    outcome text,             -- NULL while pending, then 'delivered' or 'failed'
    transport text,           -- the transport that took responsibility
    report_text text,         -- why it failed, for the NDR
    ndr_sent boolean NOT NULL DEFAULT false,
    props text NOT NULL DEFAULT '{}',
    PRIMARY KEY (message_id, row_id)
);

-- token: the fencing token of the current claim (NULL when not claimed); lease_until and
-- lease_seconds: how long the claim lasts and how far a heartbeat renews it; worker: who
-- holds it; claimed_from: the state a release puts the message back into.
CREATE TABLE queue (
    message_id bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    state text NOT NULL,
    submit_time double precision NOT NULL,
    not_before double precision,
    expires_at double precision NOT NULL,
    due_at double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    parked_by text,
    declined text[] NOT NULL DEFAULT '{}',
    handoff boolean NOT NULL DEFAULT false,
    delay_notified boolean NOT NULL DEFAULT false,
    token bigint,
    lease_until double precision,
    lease_seconds double precision,
    worker text,
    claimed_from text,
    updated_at double precision NOT NULL
);
-- The claim walks this index in submit order and stops after a page: its cost does not
-- grow with the number of finished (sent, failed, cancelled) messages.
CREATE INDEX queue_waiting ON queue (submit_time, message_id)
    WHERE state IN ('queued', 'deferred', 'retry', 'parked');
CREATE INDEX queue_by_state ON queue (state, submit_time, message_id);
CREATE INDEX queue_in_flight ON queue (lease_until) WHERE state = 'in_flight';
CREATE SEQUENCE claim_tokens;

CREATE TABLE dedupe (
    key text PRIMARY KEY,
    message_id bigint,
    created_at double precision NOT NULL
);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    entry_id bytea NOT NULL,
    at double precision NOT NULL,
    kind text NOT NULL,
    transport text,
    detail text
);
CREATE INDEX events_by_message ON events (entry_id, id);

-- The spoolers registered on the store; alive while their heartbeat is recent.
CREATE TABLE workers (
    name text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL
);

-- Each worker's status table; a dead worker's rows are not shown and are pruned.
CREATE TABLE status_rows (
    worker text NOT NULL,
    name text NOT NULL,
    position integer NOT NULL,
    props text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (worker, name)
);

CREATE TABLE transport_state (
    transport text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (transport, key)
);
