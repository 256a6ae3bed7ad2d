-- Enrollments that replied, bounced or were stopped: a StepDue fired just before the stop
-- reached the scheduler still sends nothing.
CREATE TABLE mailer.halted_enrollments (
    enrollment_id uuid PRIMARY KEY,
    reason        text NOT NULL
);
