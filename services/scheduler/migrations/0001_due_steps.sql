CREATE SCHEMA IF NOT EXISTS scheduler;

-- What the scheduler needs of each sequence to plan due times.
CREATE TABLE scheduler.sequences (
    sequence_id uuid PRIMARY KEY,
    timezone    text  NOT NULL,
    send_policy jsonb NOT NULL,
    steps       jsonb NOT NULL  -- [{"channel": ..., "wait_days": ...}, ...]
);

-- One row per planned step. `pending` rows are claimed with FOR UPDATE SKIP LOCKED when due, so
-- replicas never fire the same step; firing appends StepDue in the same transaction.
CREATE TABLE scheduler.due_steps (
    enrollment_id  uuid        NOT NULL,
    step_index     integer     NOT NULL,
    sequence_id    uuid        NOT NULL,
    contact_id     uuid        NOT NULL,
    channel        text        NOT NULL,
    due_at         timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'pending',  -- pending | fired | cancelled
    fired_at       timestamptz,
    -- the event that planned the step: StepDue continues its conversation and trace
    correlation_id uuid        NOT NULL,
    causation_id   uuid        NOT NULL,
    traceparent    text,
    PRIMARY KEY (enrollment_id, step_index)
);
CREATE INDEX due_steps_pending ON scheduler.due_steps (due_at) WHERE state = 'pending';
