-- Previews and tests answer about a workspace's own sequences and contacts only.
ALTER TABLE mailer.sequences ADD COLUMN workspace_id uuid;
ALTER TABLE mailer.contacts ADD COLUMN workspace_id uuid;
