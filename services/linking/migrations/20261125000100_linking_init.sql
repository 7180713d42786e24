-- migrate:up
-- The integration's settings per CRM org (S3, S6, S7, S14, S20).
CREATE TABLE integrations (
    org_id                   text PRIMARY KEY,
    state                    text NOT NULL CHECK (state IN ('enabled', 'disabled')),
    portal_id                text NOT NULL,
    field_mapping            jsonb NOT NULL DEFAULT '[]'::jsonb,
    permissions              jsonb NOT NULL,
    deal_won_creates_project boolean NOT NULL DEFAULT false,
    enabled_by               text NOT NULL,
    revision                 integer NOT NULL,
    matched_portals          jsonb NOT NULL DEFAULT '[]'::jsonb,
    changed_at               timestamptz NOT NULL DEFAULT now()
);

-- Service keys (S24): one per org, stored as SHA-256 of a 32-byte random key.
CREATE TABLE service_keys (
    org_id     text PRIMARY KEY,
    key_id     uuid NOT NULL,
    key_sha256 text NOT NULL UNIQUE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Projection of identity.user_access.changed: who may do what.
CREATE TABLE users (
    org_id         text NOT NULL,
    crm_user_id    text NOT NULL,
    email          text NOT NULL,
    name           text NOT NULL,
    locale         text NOT NULL,
    active         boolean NOT NULL,
    is_admin       boolean NOT NULL,
    portal_id      text,
    portal_user_id text,
    role           text NOT NULL,
    permissions    jsonb NOT NULL,
    revision       integer NOT NULL,
    PRIMARY KEY (org_id, crm_user_id)
);

-- CRM records (accounts, contacts, deals, leads) as last seen, with the upstream version.
CREATE TABLE crm_records (
    org_id      text NOT NULL,
    record_type text NOT NULL,
    record_id   text NOT NULL,
    name        text NOT NULL DEFAULT '',
    account_id  text,
    email       text,
    won         boolean NOT NULL DEFAULT false,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    deleted     boolean NOT NULL DEFAULT false,
    version     integer NOT NULL,
    PRIMARY KEY (org_id, record_type, record_id)
);
CREATE INDEX crm_records_account ON crm_records (org_id, account_id) WHERE record_type = 'contact';

-- Custom fields seen on deals/accounts (S6), with the kind of value observed.
CREATE TABLE crm_custom_fields (
    org_id     text NOT NULL,
    module     text NOT NULL,
    field      text NOT NULL,
    value_kind text NOT NULL,
    PRIMARY KEY (org_id, module, field)
);

-- PM side, per portal.
CREATE TABLE portals (
    org_id    text NOT NULL,
    portal_id text NOT NULL,
    name      text NOT NULL,
    plan      text NOT NULL,
    active    boolean NOT NULL,
    version   integer NOT NULL,
    PRIMARY KEY (org_id, portal_id)
);

CREATE TABLE projects (
    org_id            text NOT NULL,
    portal_id         text NOT NULL,
    project_id        text NOT NULL,
    name              text NOT NULL,
    status            text NOT NULL,
    progress_percent  integer NOT NULL,
    owner_id          text NOT NULL,
    group_id          text,
    user_ids          jsonb NOT NULL DEFAULT '[]'::jsonb,
    client_company_ids jsonb NOT NULL DEFAULT '[]'::jsonb,
    client_user_ids   jsonb NOT NULL DEFAULT '[]'::jsonb,
    custom_fields     jsonb NOT NULL DEFAULT '{}'::jsonb,
    deleted           boolean NOT NULL DEFAULT false,
    version           integer NOT NULL,
    PRIMARY KEY (org_id, portal_id, project_id)
);

CREATE TABLE client_companies (
    org_id     text NOT NULL,
    portal_id  text NOT NULL,
    company_id text NOT NULL,
    name       text NOT NULL,
    deleted    boolean NOT NULL DEFAULT false,
    version    integer NOT NULL,
    PRIMARY KEY (org_id, portal_id, company_id)
);

CREATE TABLE client_users (
    org_id         text NOT NULL,
    portal_id      text NOT NULL,
    client_user_id text NOT NULL,
    email          text NOT NULL,
    name           text NOT NULL,
    company_id     text NOT NULL,
    deleted        boolean NOT NULL DEFAULT false,
    version        integer NOT NULL,
    PRIMARY KEY (org_id, portal_id, client_user_id)
);

CREATE TABLE project_groups (
    org_id    text NOT NULL,
    portal_id text NOT NULL,
    group_id  text NOT NULL,
    name      text NOT NULL,
    deleted   boolean NOT NULL DEFAULT false,
    version   integer NOT NULL,
    PRIMARY KEY (org_id, portal_id, group_id)
);

-- account <-> client company and contact <-> client user pairs (identity's mapping, matching S21/S22).
CREATE TABLE customer_pairs (
    org_id    text NOT NULL,
    portal_id text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('account', 'contact')),
    crm_id    text NOT NULL,
    pm_id     text NOT NULL,
    revision  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, portal_id, kind, crm_id)
);

-- The links (S4, S16): many-to-many; `active` false = removed (kept for re-association and history).
CREATE TABLE links (
    org_id      text NOT NULL,
    portal_id   text NOT NULL,
    project_id  text NOT NULL,
    record_type text NOT NULL,
    record_id   text NOT NULL,
    active      boolean NOT NULL,
    revision    integer NOT NULL,
    source      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, portal_id, project_id, record_type, record_id)
);
CREATE INDEX links_by_record ON links (org_id, record_type, record_id) WHERE active;

-- Commands sent to the PM tool whose echo links a created project (S9, S14, S19).
CREATE TABLE pending_commands (
    command_id uuid PRIMARY KEY,
    org_id     text NOT NULL,
    kind       text NOT NULL,
    portal_id  text NOT NULL,
    data       jsonb NOT NULL,
    done       boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One project per won deal (S14).
CREATE TABLE deal_projects (
    org_id     text NOT NULL,
    deal_id    text NOT NULL,
    command_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, deal_id)
);

-- migrate:down
DROP TABLE deal_projects;
DROP TABLE pending_commands;
DROP TABLE links;
DROP TABLE customer_pairs;
DROP TABLE project_groups;
DROP TABLE client_users;
DROP TABLE client_companies;
DROP TABLE projects;
DROP TABLE portals;
DROP TABLE crm_custom_fields;
DROP TABLE crm_records;
DROP TABLE users;
DROP TABLE service_keys;
DROP TABLE integrations;
