-- Events JetStream acknowledged in the last few minutes, with the stream sequence it gave them.
-- nats-server fsyncs its file store only every `sync_interval` (two minutes by default), so an
-- acknowledged event can still vanish when the *machine* dies. The relay keeps these rows for
-- longer than that (RELAY_KEEP_SECONDS) and, when the stream's last sequence is behind what it
-- was told, publishes again the ones JetStream no longer has (eventlog/relay.py).
CREATE TABLE eventlog.published_recently (
    position     bigint      PRIMARY KEY,
    stream_seq   bigint      NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX published_recently_by_seq ON eventlog.published_recently (stream_seq);
CREATE INDEX published_recently_by_age ON eventlog.published_recently (published_at);

-- The events stream the relay publishes to, as it was created: a stream deleted and created
-- again by an operator holds none of the older events, and the relay must not pretend it does.
CREATE TABLE eventlog.relay_stream (
    stream     text        PRIMARY KEY,
    created_at timestamptz NOT NULL
);
