-- migrate:up
-- Projections of other services' events (kept newest by revision / upstream version).
CREATE TABLE integrations (
    org_id     text PRIMARY KEY,
    enabled    boolean NOT NULL,
    portal_id  text,
    revision   integer NOT NULL
);

CREATE TABLE links (
    org_id      text NOT NULL,
    portal_id   text NOT NULL,
    project_id  text NOT NULL,
    record_type text NOT NULL,
    record_id   text NOT NULL,
    linked      boolean NOT NULL,
    revision    integer NOT NULL,
    PRIMARY KEY (org_id, project_id, record_type, record_id)
);
CREATE INDEX links_by_record ON links (org_id, record_type, record_id) WHERE linked;

CREATE TABLE users (
    org_id         text NOT NULL,
    crm_user_id    text NOT NULL,
    email          text NOT NULL,
    name           text NOT NULL,
    locale         text NOT NULL,
    active         boolean NOT NULL,
    portal_user_id text,
    permissions    text[] NOT NULL,
    revision       integer NOT NULL,
    PRIMARY KEY (org_id, crm_user_id)
);
CREATE INDEX users_by_portal_user ON users (org_id, portal_user_id);

CREATE TABLE projects (
    org_id         text NOT NULL,
    project_id     text NOT NULL,
    portal_id      text NOT NULL,
    schedule_fixed boolean NOT NULL,
    version        integer NOT NULL,
    deleted        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, project_id)
);

-- Latest known upstream task snapshots (for resync back-fill, S10 parent checks, staleness).
CREATE TABLE pm_tasks (
    org_id         text NOT NULL,
    task_id        text NOT NULL,
    portal_id      text NOT NULL,
    project_id     text NOT NULL,
    parent_task_id text,
    status         text NOT NULL,
    recurring      boolean NOT NULL,
    add_to_crm     boolean NOT NULL,
    fields         jsonb NOT NULL,
    modified_at    timestamptz NOT NULL,
    version        integer NOT NULL,
    deleted        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, task_id)
);

CREATE TABLE crm_tasks (
    org_id      text NOT NULL,
    task_id     text NOT NULL,
    record_type text NOT NULL,
    record_id   text NOT NULL,
    version     integer NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, task_id)
);

-- The mapping this service owns: one row per (PM task, CRM task on one linked record).
CREATE TABLE task_mappings (
    hub_task_id  uuid PRIMARY KEY,
    org_id       text NOT NULL,
    origin       text NOT NULL CHECK (origin IN ('pm', 'crm')),
    portal_id    text NOT NULL,
    project_id   text NOT NULL,
    pm_task_id   text,
    record_type  text NOT NULL,
    record_id    text NOT NULL,
    crm_task_id  text,
    state        jsonb NOT NULL,
    pm_version   integer,
    crm_version  integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX task_mappings_pm ON task_mappings (org_id, pm_task_id, record_type, record_id) WHERE pm_task_id IS NOT NULL;
CREATE UNIQUE INDEX task_mappings_crm ON task_mappings (org_id, crm_task_id) WHERE crm_task_id IS NOT NULL;

-- Every command the service sent: how echoes and rejections are recognised.
CREATE TABLE task_commands (
    command_id     uuid PRIMARY KEY,
    hub_task_id    uuid NOT NULL REFERENCES task_mappings (hub_task_id),
    org_id         text NOT NULL,
    target         text NOT NULL CHECK (target IN ('pm', 'crm')),
    kind           text NOT NULL,
    changes        jsonb NOT NULL,
    source_at      jsonb NOT NULL,
    acting_user_id text,
    sent_at        timestamptz NOT NULL DEFAULT now(),
    outcome        text
);
CREATE INDEX task_commands_by_task ON task_commands (hub_task_id);

-- The per-task history: every mirroring decision and why.
CREATE TABLE task_decisions (
    id          bigserial PRIMARY KEY,
    org_id      text NOT NULL,
    hub_task_id uuid,
    pm_task_id  text,
    crm_task_id text,
    side        text NOT NULL,
    event_id    uuid,
    event_type  text,
    decision    text NOT NULL CHECK (decision IN ('mirrored', 'skipped', 'refused')),
    reason_code text NOT NULL,
    reason      text NOT NULL,
    fields      text[] NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_decisions_by_task ON task_decisions (hub_task_id, id);
CREATE INDEX task_decisions_by_pm ON task_decisions (org_id, pm_task_id, id);
CREATE INDEX task_decisions_by_crm ON task_decisions (org_id, crm_task_id, id);

-- migrate:down
DROP TABLE task_decisions;
DROP TABLE task_commands;
DROP TABLE task_mappings;
DROP TABLE crm_tasks;
DROP TABLE pm_tasks;
DROP TABLE projects;
DROP TABLE users;
DROP TABLE links;
DROP TABLE integrations;
