-- Analytics (services/enrollment/analytics.py): counts per sequence, step, A/B variant and
-- UTC day, fed from the log by the analytics projector and rebuildable like the others.
-- step_id 00000000-0000-0000-0000-000000000000 holds what belongs to no step (enrolled, and
-- bounces refused at send time, which never counted as sent).
CREATE TABLE enrollment.analytics_daily (
    workspace_id uuid NOT NULL,
    sequence_id uuid NOT NULL,
    step_id uuid NOT NULL,
    variant text NOT NULL DEFAULT '',
    day date NOT NULL,
    metric text NOT NULL,
    n integer NOT NULL,
    PRIMARY KEY (sequence_id, day, step_id, variant, metric)
);

-- what the handlers need to count each thing once: an enrollment's sequence and last email
CREATE TABLE enrollment.analytics_enrollments (
    enrollment_id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    sequence_id uuid NOT NULL,
    variant text NOT NULL DEFAULT '',
    last_step_id uuid,
    replied boolean NOT NULL DEFAULT false,
    opted_out boolean NOT NULL DEFAULT false
);

-- each email sent, and whether it was opened, clicked (a person's and a machine's apart) or
-- bounced yet
CREATE TABLE enrollment.analytics_emails (
    enrollment_id uuid NOT NULL,
    step_id uuid NOT NULL,
    message_id text NOT NULL,
    opened_human boolean NOT NULL DEFAULT false,
    opened_machine boolean NOT NULL DEFAULT false,
    clicked_human boolean NOT NULL DEFAULT false,
    clicked_machine boolean NOT NULL DEFAULT false,
    bounced boolean NOT NULL DEFAULT false,
    PRIMARY KEY (enrollment_id, step_id)
);
CREATE INDEX analytics_emails_by_message ON enrollment.analytics_emails (message_id);
