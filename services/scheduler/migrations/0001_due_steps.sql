CREATE SCHEMA IF NOT EXISTS scheduler;

-- What the scheduler needs of each sequence to plan due times.
CREATE TABLE scheduler.sequences (
    sequence_id uuid PRIMARY KEY,
    timezone    text  NOT NULL,
    send_policy jsonb NOT NULL,
    steps       jsonb NOT NULL,  -- the steps as in SequenceCreated / SequenceStepsChanged
    state       text  NOT NULL DEFAULT 'live'  -- live | paused | archived
);

-- Where each enrollment stands: the steps it completed and the moment its next wait counts from.
CREATE TABLE scheduler.enrollments (
    enrollment_id  uuid        PRIMARY KEY,
    sequence_id    uuid        NOT NULL,
    contact_id     uuid        NOT NULL,
    completed      uuid[]      NOT NULL DEFAULT '{}',
    anchor_at      timestamptz NOT NULL,
    active         boolean     NOT NULL DEFAULT true,
    -- the event that last moved it: StepDue continues its conversation and trace
    correlation_id uuid        NOT NULL,
    causation_id   uuid        NOT NULL,
    traceparent    text
);
CREATE INDEX scheduler_enrollments_by_sequence ON scheduler.enrollments (sequence_id) WHERE active;

-- One row per planned step. `pending` rows are claimed with FOR UPDATE SKIP LOCKED when due, so
-- replicas never fire the same step; firing appends StepDue in the same transaction. `held`
-- rows belong to paused sequences.
CREATE TABLE scheduler.due_steps (
    enrollment_id  uuid        NOT NULL,
    step_id        uuid        NOT NULL,
    step_index     integer     NOT NULL,
    channel        text        NOT NULL,
    due_at         timestamptz NOT NULL,
    state          text        NOT NULL,  -- pending | held | fired | cancelled
    fired_at       timestamptz,
    PRIMARY KEY (enrollment_id, step_id)
);
CREATE INDEX due_steps_pending ON scheduler.due_steps (due_at) WHERE state = 'pending';
CREATE INDEX due_steps_waiting ON scheduler.due_steps (enrollment_id) WHERE state IN ('pending', 'held');
