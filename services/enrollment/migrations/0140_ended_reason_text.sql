-- Why an enrollment ended, as a text any language can show (contracts/texts.py), next to the
-- English `ended_reason` the API shows. NULL for a person's own words and for events written
-- before they carried one: the pages then show the English.
ALTER TABLE enrollment.enrollments ADD COLUMN ended_reason_text jsonb;
