-- Streams that begin inside another stream's event: a contact created by an import is a row of
-- its chunk's `ContactsImported` (stream `import-…`), not an event of its own, and its stream
-- `contact-…` holds only what happened to it later (from version 1). This says in which event
-- each such stream begins, so whoever loads the stream finds its first fact. One row a
-- contact, written in the appending transaction; never updated or deleted, like the log.
-- (No foreign key: the row is written with its event, and the check would cost an index
-- lookup a contact.)
CREATE TABLE eventlog.stream_origins (
    stream_id text PRIMARY KEY,
    event_id  uuid NOT NULL
);
