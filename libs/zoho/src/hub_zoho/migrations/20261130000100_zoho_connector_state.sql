-- migrate:up
-- The state both Zoho connectors keep, each in its own schema (shared folder: hub_zoho/migrations).
-- (Same version as the per-connector migration it replaced, so databases that ran that one skip it.)
-- What the connector last published for each Zoho record: Zoho has no record revision, so the connector
-- numbers the versions itself (a new one when the record's content changed) and derives the event id from
-- it, so the same state seen twice (notification, poll, echo) is the same event.
CREATE TABLE record_state (
    org_id       text    NOT NULL,
    module       text    NOT NULL,
    record_id    text    NOT NULL,
    version      integer NOT NULL,
    content_hash text    NOT NULL,
    command_id   uuid,
    deleted      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, module, record_id)
);

-- The hub's commands already carried out: a command id is applied at most once, whatever the retries.
-- Written and committed right after Zoho accepted the call, before the Kafka offset is committed.
CREATE TABLE applied_commands (
    command_id   uuid        PRIMARY KEY,
    org_id       text        NOT NULL,
    command_type text        NOT NULL,
    module       text        NOT NULL,
    record_id    text,
    outcome      text        NOT NULL,
    reason_code  text,
    reason       text,
    applied_at   timestamptz NOT NULL DEFAULT now()
);

-- Reconciliation poll and backfill: records modified after `modified_since` are still to be read.
CREATE TABLE cursors (
    org_id         text        NOT NULL,
    purpose        text        NOT NULL,   -- 'poll' or 'backfill'
    module         text        NOT NULL,
    modified_since timestamptz,
    page           integer     NOT NULL DEFAULT 1,
    done           boolean     NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, purpose, module)
);

-- Zoho notification channels and when they lapse (renewed before that).
CREATE TABLE channels (
    org_id     text        PRIMARY KEY,
    channel_id bigint      NOT NULL,
    events     text[]      NOT NULL,
    expires_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE channels;
DROP TABLE cursors;
DROP TABLE applied_commands;
DROP TABLE record_state;
