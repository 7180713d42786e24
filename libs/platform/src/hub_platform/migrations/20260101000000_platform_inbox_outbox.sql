-- migrate:up
-- Inbox: one row per (consumer, event) handled; inserted in the handler's own
-- transaction, so a redelivered event finds its row and changes nothing.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);

-- Outbox: events a handler caused, written in the same transaction as the
-- state change and published by the relay in id order (per-key order holds).
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    value      bytea       NOT NULL,
    event_id   uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE outbox;
DROP TABLE inbox;
