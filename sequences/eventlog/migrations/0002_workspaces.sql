-- Every event belongs to a workspace (a customer of the system): its data is theirs alone.
-- Empty only for events logged before workspaces existed (no API key reads those).
ALTER TABLE eventlog.events ADD COLUMN workspace_id uuid;
