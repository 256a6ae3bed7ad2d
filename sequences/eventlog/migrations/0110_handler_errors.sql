-- The last handler failures of every durable consumer, with their trace id: what the
-- operations page and `sequences status` show (the logs have the rest). Kept short: each
-- insert removes rows older than the newest 200.
CREATE TABLE eventlog.handler_errors (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    consumer    text        NOT NULL,
    event_type  text        NOT NULL,
    stream_id   text        NOT NULL,
    error       text        NOT NULL,
    trace_id    text
);
CREATE INDEX handler_errors_at ON eventlog.handler_errors (at DESC);
