-- Read models of the enrollment service, projected from the event log (rebuildable).
CREATE SCHEMA IF NOT EXISTS enrollment;

CREATE TABLE enrollment.sequences (
    sequence_id  uuid PRIMARY KEY,
    name         text NOT NULL,
    purpose      text,
    sender_name  text NOT NULL,
    sender_email text NOT NULL,
    timezone     text NOT NULL,
    send_policy  jsonb NOT NULL,
    steps        jsonb NOT NULL,
    state        text NOT NULL,
    enrolled     integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL
);
CREATE INDEX sequences_by_creation ON enrollment.sequences (created_at, sequence_id);

CREATE TABLE enrollment.contacts (
    contact_id  uuid PRIMARY KEY,
    name        text NOT NULL,
    company     text NOT NULL,
    job_title   text NOT NULL,
    owner_name  text NOT NULL,
    email       text NOT NULL,
    phone       text NOT NULL,
    status      text NOT NULL,
    tags        text[] NOT NULL,
    lists       text[] NOT NULL,
    opted_out   boolean NOT NULL DEFAULT false,
    deleted     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
-- one live contact per address: written in the same transaction as the event, so this index is
-- also the guard against two contacts with one email
CREATE UNIQUE INDEX contacts_email ON enrollment.contacts (lower(email)) WHERE NOT deleted;
CREATE INDEX contacts_by_creation ON enrollment.contacts (created_at, contact_id) WHERE NOT deleted;
CREATE INDEX contacts_tags ON enrollment.contacts USING gin (tags);
CREATE INDEX contacts_lists ON enrollment.contacts USING gin (lists);
CREATE INDEX contacts_status ON enrollment.contacts (status) WHERE NOT deleted;

CREATE TABLE enrollment.enrollments (
    enrollment_id    uuid PRIMARY KEY,
    sequence_id      uuid NOT NULL,
    contact_id       uuid NOT NULL,
    attempt          integer NOT NULL,
    email            text NOT NULL,   -- the address it was enrolled with
    contact_name     text NOT NULL,
    contact_email    text NOT NULL,
    status           text NOT NULL,
    current_step     integer NOT NULL,
    sends            integer NOT NULL,
    opens            integer NOT NULL DEFAULT 0,
    unique_opens     integer NOT NULL DEFAULT 0,
    enrolled_at      timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL,
    next_due_at      timestamptz,
    held             boolean NOT NULL DEFAULT false,
    schedule_note    text,
    attention        text,
    ended_reason     text
);
CREATE INDEX enrollments_by_sequence ON enrollment.enrollments (sequence_id, enrolled_at, enrollment_id);
CREATE INDEX enrollments_by_sequence_status ON enrollment.enrollments (sequence_id, status);
CREATE INDEX enrollments_by_contact ON enrollment.enrollments (contact_id, sequence_id);

-- Opens per email (enrollment and step): unique opens are the rows, total opens the sum.
CREATE TABLE enrollment.email_opens (
    enrollment_id uuid    NOT NULL,
    step_id       uuid    NOT NULL,
    opens         integer NOT NULL,
    PRIMARY KEY (enrollment_id, step_id)
);

-- SMS and call steps waiting for their owner.
CREATE TABLE enrollment.tasks (
    task_id       uuid PRIMARY KEY,
    enrollment_id uuid        NOT NULL,
    sequence_id   uuid        NOT NULL,
    contact_id    uuid        NOT NULL,
    contact_name  text        NOT NULL,
    step_id       uuid        NOT NULL,
    step_index    integer     NOT NULL,
    owner_name    text        NOT NULL,
    channel       text        NOT NULL,
    instructions  text        NOT NULL,
    due_at        timestamptz NOT NULL,
    state         text        NOT NULL,  -- open | done | skipped
    completed_at  timestamptz
);
CREATE INDEX tasks_open_by_owner ON enrollment.tasks (owner_name, due_at) WHERE state = 'open';
CREATE INDEX tasks_by_sequence ON enrollment.tasks (sequence_id, due_at);
