-- Per step of a sequence: who got it (the Steps tab's counts). One row per enrollment and step,
-- from EnrollmentStepCompleted; and each enrollment's last step, to which a reply or a bounce
-- is counted.
CREATE TABLE enrollment.step_completions (
    enrollment_id uuid        NOT NULL,
    step_id       uuid        NOT NULL,
    sequence_id   uuid        NOT NULL,
    workspace_id  uuid,
    channel       text        NOT NULL,
    completed_at  timestamptz NOT NULL,
    PRIMARY KEY (enrollment_id, step_id)
);
CREATE INDEX step_completions_by_sequence ON enrollment.step_completions (sequence_id, step_id);
ALTER TABLE enrollment.enrollments ADD COLUMN last_step_id uuid;

-- what the projection would have written for the events already in the log (the same rows a
-- rebuild gives; events not yet projected are written again by the handlers, which skip them)
INSERT INTO enrollment.step_completions (enrollment_id, step_id, sequence_id, workspace_id,
                                         channel, completed_at)
SELECT e.enrollment_id, CAST(ev.data->>'step_id' AS uuid), e.sequence_id, e.workspace_id,
       ev.data->>'channel', CAST(ev.data->>'completed_at' AS timestamptz)
FROM eventlog.events ev
JOIN enrollment.enrollments e ON e.enrollment_id = CAST(ev.data->>'enrollment_id' AS uuid)
WHERE ev.type = 'EnrollmentStepCompleted'
ON CONFLICT DO NOTHING;

UPDATE enrollment.enrollments e SET last_step_id = last.step_id
FROM (SELECT DISTINCT ON (ev.data->>'enrollment_id') CAST(ev.data->>'enrollment_id' AS uuid)
             AS enrollment_id, CAST(ev.data->>'step_id' AS uuid) AS step_id
      FROM eventlog.events ev WHERE ev.type = 'EnrollmentStepCompleted'
      ORDER BY ev.data->>'enrollment_id', ev.position DESC) last
WHERE e.enrollment_id = last.enrollment_id;
