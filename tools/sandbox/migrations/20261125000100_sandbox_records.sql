-- migrate:up
-- Every record of both upstream tools, one row each: `data` is exactly the record as its
-- upsert event carries it (the event is rebuilt from it), `extra` holds what the real tool
-- knows but the event does not show (project grants, links to CRM ids, hub task ids).
CREATE SEQUENCE record_ids;

CREATE TABLE records (
    org_id      text        NOT NULL,
    side        text        NOT NULL CHECK (side IN ('crm', 'pm')),
    kind        text        NOT NULL,
    id          text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    deleted     boolean     NOT NULL DEFAULT false,
    data        jsonb       NOT NULL,
    extra       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    modified_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, side, kind, id)
);
CREATE INDEX records_data ON records USING gin (data jsonb_path_ops);

-- S19: client-user e-mails are unique per portal (the safety net under the rule in domain.py).
CREATE UNIQUE INDEX records_client_user_email ON records (org_id, (data->>'portal_id'), lower(btrim(data->>'email')))
    WHERE side = 'pm' AND kind = 'client_user' AND NOT deleted;

-- A command id is applied at most once, whatever envelope it arrives in.
CREATE TABLE applied_commands (
    command_id   uuid        PRIMARY KEY,
    command_type text        NOT NULL,
    org_id       text        NOT NULL,
    side         text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('applied', 'rejected')),
    reason_code  text,
    event_id     uuid        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);

-- Every command seen and every event published, for counting (convergence: no echo loop).
CREATE TABLE message_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    org_id      text        NOT NULL,
    what        text        NOT NULL CHECK (what IN ('command_applied', 'command_rejected', 'command_duplicate', 'event_emitted')),
    side        text        NOT NULL,
    event_type  text        NOT NULL,
    event_id    uuid,
    command_id  uuid,
    entity_key  text,
    reason_code text
);
CREATE INDEX message_log_org ON message_log (org_id, what, event_type);

-- migrate:down
DROP TABLE message_log;
DROP TABLE applied_commands;
DROP TABLE records;
DROP SEQUENCE record_ids;
