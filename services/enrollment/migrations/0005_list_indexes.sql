-- The lists people page through, with 100,000 contacts and enrollments (issue 12, "Measure";
-- bench/app_pages.py measures them).

-- The enrollee table sorted by last activity (newest first: the index read backwards), keyset
-- cursor (last_activity_at, enrollment_id) as before. The sequence id leads, as in the other
-- enrollee indexes: the sequence is checked to be the workspace's before the list is read.
CREATE INDEX enrollments_by_sequence_activity
    ON enrollment.enrollments (sequence_id, last_activity_at, enrollment_id);
-- Filtered by status, in the default order (enrolled_at, enrollment_id): the page is the index's
-- first rows instead of every row of that status sorted. Its prefix still serves what the old
-- (sequence_id, status) index did: active enrollments of a sequence, counts per status.
DROP INDEX enrollment.enrollments_by_sequence_status;
CREATE INDEX enrollments_by_sequence_status
    ON enrollment.enrollments (sequence_id, status, enrolled_at, enrollment_id);

-- Contact search, q= anywhere in the name, company or email (services/enrollment/search.py):
-- `search`, the three lowercased once when the row is written, joined by a line feed (no field
-- and no query holds one, single-line text: a match never spans two fields), for LIKE to decide
-- without lowering three columns of every row as ILIKE did; and `search_grams`, their bigrams,
-- made by the projection, in a GIN index that narrows the rows down first (pg_trgm is not in
-- the embedded PostgreSQL). Rows already there get their bigrams here, lowered by PostgreSQL.
ALTER TABLE enrollment.contacts ADD COLUMN search text NOT NULL GENERATED ALWAYS AS (
    lower(name) || E'\n' || lower(company) || E'\n' || lower(email)) STORED;
ALTER TABLE enrollment.contacts ADD COLUMN search_grams text[] NOT NULL DEFAULT '{}';
CREATE FUNCTION pg_temp.bigrams(value text) RETURNS text[] LANGUAGE sql IMMUTABLE
    RETURN ARRAY(SELECT DISTINCT substr(value, i, 2) FROM generate_series(1, length(value) - 1) AS i);
UPDATE enrollment.contacts SET search_grams = ARRAY(SELECT DISTINCT unnest(
    pg_temp.bigrams(lower(name)) || pg_temp.bigrams(lower(company)) || pg_temp.bigrams(lower(email))));
CREATE INDEX contacts_search_grams ON enrollment.contacts USING gin (search_grams);
