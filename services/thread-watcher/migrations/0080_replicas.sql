-- Every watcher replica's heartbeat: a replica holds at most its share of the mailbox leases
-- (all mailboxes over the replicas seen lately), so replicas share the mailboxes evenly.
CREATE TABLE watcher.replicas (
    replica_id  uuid PRIMARY KEY,
    seen_at     timestamptz NOT NULL
);
