CREATE SCHEMA IF NOT EXISTS mailer;

-- What the mailer needs of sequences and contacts, projected from their events.
CREATE TABLE mailer.sequences (
    sequence_id  uuid PRIMARY KEY,
    sender_name  text  NOT NULL,
    sender_email text  NOT NULL,
    timezone     text  NOT NULL,  -- the Date header is written in it
    steps        jsonb NOT NULL
);

CREATE TABLE mailer.contacts (
    contact_id   uuid PRIMARY KEY,
    email        text  NOT NULL,
    merge_values jsonb NOT NULL,  -- {"name": ..., "company": ..., "job_title": ..., "owner_name": ...}
    opted_out    boolean NOT NULL DEFAULT false
);

-- One row per email step sent: the guard against sending a step twice, and the thread chain.
CREATE TABLE mailer.deliveries (
    enrollment_id  uuid        NOT NULL,
    step_id        uuid        NOT NULL,
    step_index     integer     NOT NULL,
    message_id     text        NOT NULL,
    thread_subject text        NOT NULL,
    "references"   text[]      NOT NULL,
    recipient      text        NOT NULL,
    sent_at        timestamptz NOT NULL,
    PRIMARY KEY (enrollment_id, step_id)
);
