-- migrate:up
-- Identity's own copy of what it needs from both sides, each row with the
-- upstream `version` it was last applied at (stale / out-of-order events are
-- dropped by comparing it). Deletes keep a tombstone row (deleted = true) so
-- an upsert older than the delete is recognised as stale.

-- The org <-> portal pairing, as told by linking.integration.changed.
CREATE TABLE orgs (
    org_id               text PRIMARY KEY,
    state                text NOT NULL DEFAULT 'disabled',
    portal_id            text,
    integration_revision integer NOT NULL DEFAULT 0
);

-- Permission profile history per org (S3, S23): what applied at time T is the
-- row with the greatest effective_from <= T. Rows are never rewritten.
CREATE TABLE permission_profiles (
    org_id         text        NOT NULL,
    revision       integer     NOT NULL,
    role           text        NOT NULL,
    permissions    text[]      NOT NULL,
    effective_from timestamptz NOT NULL,
    changed_by     text        NOT NULL,
    request_id     uuid,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, revision)
);
CREATE INDEX permission_profiles_at ON permission_profiles (org_id, effective_from);
CREATE UNIQUE INDEX permission_profiles_request ON permission_profiles (org_id, request_id) WHERE request_id IS NOT NULL;

-- CRM users and their mapping to a portal user (matched by normalised e-mail).
-- A deactivated user stays here with active = false (never deleted).
CREATE TABLE crm_users (
    org_id          text        NOT NULL,
    crm_user_id     text        NOT NULL,
    email           text        NOT NULL,
    email_norm      text        NOT NULL,
    name            text        NOT NULL,
    locale          text        NOT NULL,
    active          boolean     NOT NULL,
    is_admin        boolean     NOT NULL,
    version         bigint      NOT NULL,
    modified_at     timestamptz NOT NULL,
    portal_id       text,
    portal_user_id  text,
    access_revision integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, crm_user_id)
);
CREATE INDEX crm_users_email ON crm_users (org_id, email_norm);

CREATE TABLE portal_users (
    org_id     text    NOT NULL,
    portal_id  text    NOT NULL,
    id         text    NOT NULL,
    email      text,
    email_norm text,
    name       text,
    role       text,
    active     boolean NOT NULL DEFAULT false,
    deleted    boolean NOT NULL DEFAULT false,
    version    bigint  NOT NULL,
    PRIMARY KEY (org_id, portal_id, id)
);
CREATE INDEX portal_users_email ON portal_users (org_id, portal_id, email_norm);

CREATE TABLE accounts (
    org_id  text    NOT NULL,
    id      text    NOT NULL,
    name    text,
    deleted boolean NOT NULL DEFAULT false,
    version bigint  NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE contacts (
    org_id     text    NOT NULL,
    id         text    NOT NULL,
    account_id text,
    name       text,
    email      text,
    email_norm text,
    deleted    boolean NOT NULL DEFAULT false,
    version    bigint  NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX contacts_account ON contacts (org_id, account_id);

CREATE TABLE client_companies (
    org_id    text    NOT NULL,
    portal_id text    NOT NULL,
    id        text    NOT NULL,
    name      text,
    deleted   boolean NOT NULL DEFAULT false,
    version   bigint  NOT NULL,
    PRIMARY KEY (org_id, portal_id, id)
);

CREATE TABLE client_users (
    org_id            text    NOT NULL,
    portal_id         text    NOT NULL,
    id                text    NOT NULL,
    email             text,
    email_norm        text,
    name              text,
    client_company_id text,
    deleted           boolean NOT NULL DEFAULT false,
    version           bigint  NOT NULL,
    PRIMARY KEY (org_id, portal_id, id)
);
CREATE INDEX client_users_email ON client_users (org_id, portal_id, email_norm);

-- account <-> client company, contact <-> client user (S13). One contact maps to
-- at most one client user per portal (hence one client company), and one PM
-- record to at most one CRM record.
CREATE TABLE customer_mappings (
    org_id             text    NOT NULL,
    portal_id          text    NOT NULL,
    kind               text    NOT NULL CHECK (kind IN ('account', 'contact')),
    crm_id             text    NOT NULL,
    pm_id              text,
    state              text    NOT NULL CHECK (state IN ('pending', 'linked', 'unlinked')),
    pending_command_id uuid,
    revision           integer NOT NULL DEFAULT 1,
    PRIMARY KEY (org_id, portal_id, kind, crm_id)
);
CREATE UNIQUE INDEX customer_mappings_pm ON customer_mappings (org_id, portal_id, kind, pm_id)
    WHERE pm_id IS NOT NULL AND state <> 'unlinked';

-- Commands identity sent to the PM side and is waiting to see echoed or rejected.
CREATE TABLE pending_commands (
    command_id   uuid PRIMARY KEY,
    org_id       text        NOT NULL,
    command_type text        NOT NULL,
    subject_kind text        NOT NULL,
    subject_id   text        NOT NULL,
    request_id   uuid,
    sent_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_commands_subject ON pending_commands (org_id, command_type, subject_id);

-- migrate:down
DROP TABLE pending_commands;
DROP TABLE customer_mappings;
DROP TABLE client_users;
DROP TABLE client_companies;
DROP TABLE contacts;
DROP TABLE accounts;
DROP TABLE portal_users;
DROP TABLE crm_users;
DROP TABLE permission_profiles;
DROP TABLE orgs;
