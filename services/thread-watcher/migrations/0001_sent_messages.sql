CREATE SCHEMA IF NOT EXISTS watcher;

-- Every Message-ID we sent, and whose it is: a reply naming one of these belongs to that
-- enrollment.
CREATE TABLE watcher.sent_messages (
    message_id     text PRIMARY KEY,
    enrollment_id  uuid        NOT NULL,
    sequence_id    uuid        NOT NULL,
    contact_id     uuid        NOT NULL,
    recipient      text        NOT NULL,
    subject        text        NOT NULL,
    sent_at        timestamptz NOT NULL
);
CREATE INDEX sent_messages_by_recipient ON watcher.sent_messages (lower(recipient));
