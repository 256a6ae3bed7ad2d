-- The contact's IANA timezone (NULL: not known), as its events say.
ALTER TABLE enrollment.contacts ADD COLUMN IF NOT EXISTS timezone text;
