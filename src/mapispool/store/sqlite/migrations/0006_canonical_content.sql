-- Issue #11: 1 when the content was stored in canonical form at submit (CRLF line ends,
-- no Bcc field, the eight_bit flag exact), so that transports send it as stored.
-- Messages stored before this migration keep 0: they are sent the careful way (line ends
-- converted, Bcc removed again, 8-bit bytes looked for), as they always were.
ALTER TABLE messages ADD COLUMN canonical INTEGER NOT NULL DEFAULT 0;
