-- migrate:up
-- The delivery log: one row per notification request (request_id is the de-duplication key).
-- The rendered mail is stored with the row so every (re)send of a request is the same message.
CREATE TABLE deliveries (
    request_id          uuid PRIMARY KEY,
    org_id              text NOT NULL,
    kind                text NOT NULL,
    optional            boolean NOT NULL,
    recipient_email     text NOT NULL,
    recipient_name      text,
    locale              text NOT NULL,
    state               text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
    message_id          text NOT NULL,
    subject             text,
    body_text           text,
    body_html           text,
    attachment_name     text,
    attachment          bytea,
    request_event_id    uuid NOT NULL,
    correlation_id      uuid NOT NULL,
    origin              text NOT NULL,
    entity_key          text NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    deferrals           integer NOT NULL DEFAULT 0,
    resent_after_crash  integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_until         timestamptz,
    last_error          text,
    suppressed_reason   text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX deliveries_recipient ON deliveries (lower(recipient_email), created_at DESC);

-- Opt-outs of optional kinds, per recipient address (lower-cased) and kind.
CREATE TABLE preferences (
    email       text NOT NULL,
    kind        text NOT NULL,
    opted_out   boolean NOT NULL,
    changed_at  timestamptz NOT NULL,
    changed_by  text,
    PRIMARY KEY (email, kind)
);

-- migrate:down
DROP TABLE preferences;
DROP TABLE deliveries;
