-- The connected mailboxes a sequence sends from in rotation (none: from its sender_email).
ALTER TABLE enrollment.sequences ADD COLUMN mailbox_pool text[] NOT NULL DEFAULT '{}';
