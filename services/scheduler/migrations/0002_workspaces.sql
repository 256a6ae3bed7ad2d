-- The workspace of each sequence (previews answer only its own workspace) and of each enrollment
-- (StepDue is appended in it).
ALTER TABLE scheduler.sequences ADD COLUMN workspace_id uuid;
ALTER TABLE scheduler.enrollments ADD COLUMN workspace_id uuid;
