-- Issue #11: true when the content was stored in canonical form at submit (CRLF line
-- ends, no Bcc field, the eight_bit flag exact), so that transports send it as stored.
-- Messages stored before this migration keep false and are sent the careful way.
ALTER TABLE messages ADD COLUMN canonical boolean NOT NULL DEFAULT false;
