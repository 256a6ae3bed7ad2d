-- An enrollment's next step is not planned before this moment (EnrollmentPaused; NULL: none).
ALTER TABLE scheduler.enrollments ADD COLUMN IF NOT EXISTS paused_until timestamptz;
