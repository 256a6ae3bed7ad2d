-- A paused enrollment's next step waits until then (EnrollmentPaused; NULL: not paused), and why.
ALTER TABLE enrollment.enrollments ADD COLUMN IF NOT EXISTS paused_until timestamptz;
ALTER TABLE enrollment.enrollments ADD COLUMN IF NOT EXISTS pause_reason text;
