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

CREATE TABLE enrollment.contacts (
    contact_id  uuid PRIMARY KEY,
    name        text NOT NULL,
    company     text NOT NULL,
    job_title   text NOT NULL,
    owner_name  text NOT NULL,
    email       text NOT NULL,
    phone       text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE enrollment.enrollments (
    enrollment_id    uuid PRIMARY KEY,
    sequence_id      uuid NOT NULL,
    contact_id       uuid NOT NULL,
    status           text NOT NULL,
    current_step     integer NOT NULL,
    sends            integer NOT NULL,
    enrolled_at      timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL
);
CREATE INDEX enrollments_by_sequence ON enrollment.enrollments (sequence_id, enrolled_at);
