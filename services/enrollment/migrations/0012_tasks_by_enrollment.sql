-- An enrollment's tasks, for its timeline (a task's events are in the task's own stream, which
-- the timeline finds by these ids: a done or skipped task, with its note, is part of the story).
CREATE INDEX tasks_by_enrollment ON enrollment.tasks (enrollment_id);
