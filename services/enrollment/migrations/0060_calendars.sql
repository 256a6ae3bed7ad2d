-- Sending calendars: a sequence's holiday choice and zone mode; why the next step of an
-- enrollment moved (the window, holidays, skip dates) and the zone it goes out in; the contact's
-- own zone (the contact-timezone branch adds the same column: IF NOT EXISTS on both).
ALTER TABLE enrollment.sequences ADD COLUMN holidays jsonb NOT NULL DEFAULT '"workspace"';
ALTER TABLE enrollment.sequences ADD COLUMN zone_mode text NOT NULL DEFAULT 'sequence';
ALTER TABLE enrollment.enrollments ADD COLUMN schedule_moved jsonb NOT NULL DEFAULT '[]';
ALTER TABLE enrollment.enrollments ADD COLUMN schedule_zone text;
ALTER TABLE enrollment.contacts ADD COLUMN IF NOT EXISTS timezone text;
