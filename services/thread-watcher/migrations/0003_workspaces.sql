-- The workspace of each sent message: a reply or bounce to it is recorded in that workspace.
ALTER TABLE watcher.sent_messages ADD COLUMN workspace_id uuid;
