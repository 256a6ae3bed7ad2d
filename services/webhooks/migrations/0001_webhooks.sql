-- Webhooks: where a workspace wants its events, and the log of every delivery.
CREATE SCHEMA IF NOT EXISTS webhooks;

CREATE TABLE webhooks.webhooks (
    webhook_id   uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    url          text NOT NULL,
    event_types  text[] NOT NULL,   -- type names, or '*' for every type
    description  text NOT NULL DEFAULT '',
    -- needed to sign every delivery, so kept as it is (like SMTP credentials); never shown again
    secret       text NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL
);
CREATE INDEX webhooks_by_workspace ON webhooks.webhooks (workspace_id, created_at, webhook_id);

-- One row per (webhook, event). `seq` is the order deliveries were queued in (the log's order):
-- of one webhook and ordering key (an enrollment), only the oldest pending one is sent.
CREATE TABLE webhooks.deliveries (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     uuid NOT NULL UNIQUE,
    webhook_id      uuid NOT NULL REFERENCES webhooks.webhooks,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    ordering_key    text NOT NULL,
    payload         text NOT NULL,  -- the exact body sent (what the signature covers)
    state           text NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX deliveries_due ON webhooks.deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_in_order ON webhooks.deliveries (webhook_id, ordering_key, seq)
    WHERE state = 'pending';
CREATE INDEX deliveries_log ON webhooks.deliveries (webhook_id, seq);
