-- The event log: the system of record. Rows are never updated or deleted.
CREATE SCHEMA IF NOT EXISTS eventlog;

CREATE TABLE eventlog.events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    traceparent     text,
    tracestate      text,
    data            jsonb       NOT NULL,
    -- the optimistic-concurrency guard: one writer wins each (stream, version)
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

-- Events committed but not yet acknowledged by JetStream. The relay deletes a row only after
-- JetStream acked the event, so a crash between commit and publish loses nothing. Reading this
-- table (instead of "position > last published") is what keeps positions that commit out of
-- order from being skipped.
CREATE TABLE eventlog.outbox (
    position bigint PRIMARY KEY
);

CREATE FUNCTION eventlog.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventlog_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON eventlog.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog.notify_outbox();

-- Where each consumer is in each stream it reads: the idempotency guard of every handler,
-- written in the same transaction as the handler's effects.
CREATE TABLE eventlog.consumer_positions (
    consumer   text    NOT NULL,
    stream_id  text    NOT NULL,
    version    integer NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);
