-- Sending calendars: a sequence's holiday choice and zone mode (its window is in send_policy),
-- the zone of each enrollment's contact, and each workspace's default holidays and skip dates.
ALTER TABLE scheduler.sequences ADD COLUMN holidays jsonb NOT NULL DEFAULT '"workspace"';
ALTER TABLE scheduler.sequences ADD COLUMN zone_mode text NOT NULL DEFAULT 'sequence';
ALTER TABLE scheduler.enrollments ADD COLUMN contact_timezone text;
CREATE TABLE scheduler.workspace_calendars (
    workspace_id uuid  PRIMARY KEY,
    holidays     jsonb,                      -- a HolidayCalendar, or null: none
    skip_dates   jsonb NOT NULL DEFAULT '[]' -- [{"date": "2027-05-14", "name": "offsite"}]
);
CREATE INDEX scheduler_enrollments_by_contact ON scheduler.enrollments (contact_id) WHERE active;
CREATE INDEX scheduler_enrollments_by_workspace ON scheduler.enrollments (workspace_id) WHERE active;
