-- The event types each durable consumer is given by JetStream (its filter subjects), and the
-- log position after which it is given every event of that type. A consumer reads only the
-- types it handles, so the versions of a stream it does not see are either events of types it
-- does not read or events still on their way (handed back, redelivered): this table tells the
-- two apart. A type added to a consumer's filter later is given only from where the consumer
-- then stood, so its older events are not waited for (`since`).
CREATE TABLE eventlog.consumer_filters (
    consumer text   NOT NULL,
    type     text   NOT NULL,
    since    bigint NOT NULL,
    PRIMARY KEY (consumer, type)
);
