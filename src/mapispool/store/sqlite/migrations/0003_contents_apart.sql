-- Message content lives in its own table, so that moving a message or changing its
-- properties never rewrites a large blob (SQLite rewrites a whole row on UPDATE).
-- messages.content stays, empty: SQLite cannot drop a NOT NULL column cheaply.
CREATE TABLE contents (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
INSERT INTO contents (message_id, data) SELECT id, content FROM messages;
UPDATE messages SET content = X'';
