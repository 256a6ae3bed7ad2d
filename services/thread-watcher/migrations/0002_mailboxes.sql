-- Enrollments that ended (replied, bounced, stopped, done): the subject fallback of reply
-- matching and the recipient fallback of bounce matching consider open enrollments only.
CREATE TABLE watcher.ended_enrollments (
    enrollment_id  uuid PRIMARY KEY,
    ended_as       text        NOT NULL,
    ended_at       timestamptz NOT NULL
);
CREATE INDEX sent_messages_by_enrollment ON watcher.sent_messages (enrollment_id);

-- How far each folder has been read: the last UID examined, valid while the folder keeps its
-- UIDVALIDITY.
CREATE TABLE watcher.folder_positions (
    mailbox      text        NOT NULL,  -- the mailbox URL without its password
    folder       text        NOT NULL,
    uidvalidity  bigint      NOT NULL,
    last_uid     bigint      NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (mailbox, folder)
);

-- Every message examined, once, with what was decided. Its key (the Message-ID, else a hash of
-- the message) makes a rescan after a UIDVALIDITY change, a copy in a second folder or a second
-- replica find it examined already; it is also the trail an operator reads to see why.
CREATE TABLE watcher.examined_messages (
    message_key    text PRIMARY KEY,
    mailbox        text        NOT NULL,
    folder         text        NOT NULL,
    decision       text        NOT NULL,  -- reply | bounce hard | bounce soft | auto-reply | unrelated
    enrollment_id  uuid,
    reasons        text        NOT NULL,
    examined_at    timestamptz NOT NULL
);
CREATE INDEX examined_messages_by_enrollment ON watcher.examined_messages (enrollment_id);

-- The state of each mailbox, written by the replica watching it, read by GET /v1/mailboxes/health.
CREATE TABLE watcher.mailbox_health (
    mailbox               text PRIMARY KEY,
    healthy               boolean     NOT NULL,
    state                 text        NOT NULL,  -- connecting | watching | failing
    folders               text[]      NOT NULL,
    idle                  boolean     NOT NULL,  -- IDLE in use (else polling only)
    last_error            text,
    consecutive_failures  integer     NOT NULL,
    last_success_at       timestamptz,
    last_attempt_at       timestamptz,
    next_attempt_at       timestamptz
);
