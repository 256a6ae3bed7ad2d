-- Enrollees per sequence and status (the sequence list and GET /v1/sequences show them for every
-- sequence of a page: counted per request, that was most of the list's time with 100,000
-- enrollees). Kept by triggers on enrollment.enrollments, so that every statement inserting an
-- enrollee or changing a status counts it in its own transaction, the set-based handlers' too
-- (their UPDATE ... FROM cannot return a row's old status in PostgreSQL 16). A rebuild empties
-- this table with the others (TRUNCATE fires no row trigger) and the replay counts again.
CREATE TABLE enrollment.enrollment_counts (
    sequence_id uuid   NOT NULL,
    status      text   NOT NULL,
    enrollees   bigint NOT NULL,
    PRIMARY KEY (sequence_id, status)
);

-- new enrollees, a statement at a time (a bulk enrollment of 100,000 is one upsert per status)
CREATE FUNCTION enrollment.count_new_enrollees() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO enrollment.enrollment_counts AS c (sequence_id, status, enrollees)
    SELECT sequence_id, status, count(*) FROM new_enrollees GROUP BY sequence_id, status
    ORDER BY sequence_id, status  -- rows locked in one order by every writer: no deadlock
    ON CONFLICT (sequence_id, status) DO UPDATE SET enrollees = c.enrollees + EXCLUDED.enrollees;
    RETURN NULL;
END $$;
CREATE TRIGGER enrollees_counted AFTER INSERT ON enrollment.enrollments
    REFERENCING NEW TABLE AS new_enrollees FOR EACH STATEMENT
    EXECUTE FUNCTION enrollment.count_new_enrollees();

-- a status change moves one enrollee from one count to another. A row trigger, for changed
-- rows only: a statement trigger would keep every updated row of every statement (a step
-- done, an open, a plan) for a transition table, though few of them change a status.
CREATE FUNCTION enrollment.count_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO enrollment.enrollment_counts AS c (sequence_id, status, enrollees)
    SELECT NEW.sequence_id, moved.status, moved.delta
    FROM (VALUES (OLD.status, -1), (NEW.status, 1)) AS moved(status, delta)
    ORDER BY moved.status
    ON CONFLICT (sequence_id, status) DO UPDATE SET enrollees = c.enrollees + EXCLUDED.enrollees;
    RETURN NULL;
END $$;
CREATE TRIGGER enrollee_status_counted AFTER UPDATE OF status ON enrollment.enrollments
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION enrollment.count_status_change();

-- the enrollees already there
INSERT INTO enrollment.enrollment_counts (sequence_id, status, enrollees)
SELECT sequence_id, status, count(*) FROM enrollment.enrollments GROUP BY sequence_id, status;
