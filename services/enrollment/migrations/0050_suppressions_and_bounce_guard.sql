-- The workspace's do-not-contact list (addresses and whole domains), from AddressSuppressed /
-- SuppressionRemoved: enrolling checks a contact's address and its domain against it.
CREATE TABLE enrollment.suppressions (
    suppression_id uuid        PRIMARY KEY,
    workspace_id   uuid        NOT NULL,
    value          text        NOT NULL,  -- lowercased address, or domain
    kind           text        NOT NULL,  -- address | domain
    reason         text        NOT NULL,  -- bounced | manual | import
    note           text        NOT NULL DEFAULT '',
    added_at       timestamptz NOT NULL
);
CREATE UNIQUE INDEX suppressions_by_value ON enrollment.suppressions (workspace_id, value);

-- Steps a recipient's server rejected for their content (SequenceStepFlagged), until edited.
CREATE TABLE enrollment.step_flags (
    sequence_id uuid        NOT NULL,
    step_id     uuid        NOT NULL,
    reason      text        NOT NULL,
    diagnostic  text        NOT NULL,
    flagged_at  timestamptz NOT NULL,
    PRIMARY KEY (sequence_id, step_id)
);

-- The bounce-rate guard's numbers, and why a sequence paused itself.
ALTER TABLE enrollment.enrollments ADD COLUMN bounce_class text;
ALTER TABLE enrollment.enrollments ADD COLUMN bounced_at_send boolean NOT NULL DEFAULT false;
ALTER TABLE enrollment.sequences ADD COLUMN paused_reason text;
CREATE INDEX step_completions_by_sequence_time
    ON enrollment.step_completions (sequence_id, completed_at);
