-- Why a step is held and why the next one moved, as texts any language can show
-- (contracts/texts.py: a catalog message and its values), next to the English `attention` and
-- `schedule_note` the API shows. NULL for events written before they carried one: the pages
-- then show the English.
ALTER TABLE enrollment.enrollments ADD COLUMN attention_text jsonb;
ALTER TABLE enrollment.enrollments ADD COLUMN schedule_note_text jsonb;
