-- The workspace's own sender mailboxes. Everything secret (passwords, OAuth tokens) is in
-- `secrets`, a Fernet token under SEQUENCES_ENCRYPTION_KEYS (the first key writes, every key
-- reads); the other columns hold nothing secret and are what the API shows.
CREATE TABLE mailer.mailboxes (
    mailbox_id     uuid PRIMARY KEY,
    workspace_id   uuid        NOT NULL,
    address        text        NOT NULL,  -- lowercased
    display_name   text        NOT NULL,
    owner_user_id  uuid,
    auth           text        NOT NULL,  -- password | oauth2
    oauth_provider text,
    smtp           jsonb       NOT NULL,  -- host, port, security, username
    imap           jsonb,                 -- host, port, security, username, folders, idle
    limits         jsonb       NOT NULL,
    secrets        text        NOT NULL,
    connected_at   timestamptz NOT NULL,  -- the warm-up ramp counts days from here
    updated_at     timestamptz NOT NULL,
    healthy        boolean     NOT NULL DEFAULT true,
    problem        text,                  -- why not healthy (redacted)
    checked_at     timestamptz,
    UNIQUE (workspace_id, address)
);

-- The mailbox each enrollment of a rotating sequence got: it keeps it for its whole thread.
-- `awaiting` until its first email is recorded, so that new enrollments of one day spread
-- over the pool by the room left, counting the ones not sent yet.
CREATE TABLE mailer.enrollment_mailboxes (
    enrollment_id  uuid PRIMARY KEY,
    address        text        NOT NULL,
    day            date        NOT NULL,
    awaiting       boolean     NOT NULL DEFAULT true
);
CREATE INDEX enrollment_mailboxes_awaiting ON mailer.enrollment_mailboxes (address, day)
    WHERE awaiting;

ALTER TABLE mailer.sequences ADD COLUMN mailbox_pool text[] NOT NULL DEFAULT '{}';
-- the hourly cap: sends in the current hour
ALTER TABLE mailer.mailbox_usage ADD COLUMN hour timestamptz,
                                 ADD COLUMN hour_sent integer NOT NULL DEFAULT 0;
