-- Every read model row belongs to a workspace, and every query filters by it. Rows projected
-- before workspaces existed have none (no API key sees them; a rebuild fills what it can).
ALTER TABLE enrollment.sequences ADD COLUMN workspace_id uuid;
ALTER TABLE enrollment.contacts ADD COLUMN workspace_id uuid;
ALTER TABLE enrollment.enrollments ADD COLUMN workspace_id uuid;
ALTER TABLE enrollment.tasks ADD COLUMN workspace_id uuid;

DROP INDEX enrollment.sequences_by_creation;
CREATE INDEX sequences_by_creation ON enrollment.sequences (workspace_id, created_at, sequence_id);
-- one live contact per address in each workspace (two workspaces may know the same person)
DROP INDEX enrollment.contacts_email;
CREATE UNIQUE INDEX contacts_email ON enrollment.contacts (workspace_id, lower(email))
    WHERE NOT deleted;
DROP INDEX enrollment.contacts_by_creation;
CREATE INDEX contacts_by_creation ON enrollment.contacts (workspace_id, created_at, contact_id)
    WHERE NOT deleted;
DROP INDEX enrollment.contacts_status;
CREATE INDEX contacts_status ON enrollment.contacts (workspace_id, status) WHERE NOT deleted;
DROP INDEX enrollment.tasks_open_by_owner;
CREATE INDEX tasks_open_by_owner ON enrollment.tasks (workspace_id, owner_name, due_at)
    WHERE state = 'open';
CREATE INDEX tasks_by_workspace ON enrollment.tasks (workspace_id, due_at, task_id);
