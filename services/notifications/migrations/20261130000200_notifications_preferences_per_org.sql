-- migrate:up
-- Opt-outs belong to an org (a tenant): the same address can be opted out for one org and not another,
-- and an org changes only its own. Rows from before get the orgs that have mailed the address;
-- an opt-out of an address no org has mailed yet cannot be attributed and is dropped.
CREATE TABLE preferences_per_org (
    org_id      text NOT NULL,
    email       text NOT NULL,
    kind        text NOT NULL,
    opted_out   boolean NOT NULL,
    changed_at  timestamptz NOT NULL,
    changed_by  text,
    PRIMARY KEY (org_id, email, kind)
);
INSERT INTO preferences_per_org (org_id, email, kind, opted_out, changed_at, changed_by)
SELECT DISTINCT d.org_id, p.email, p.kind, p.opted_out, p.changed_at, p.changed_by
FROM preferences p JOIN deliveries d ON lower(d.recipient_email) = p.email;
DROP TABLE preferences;
ALTER TABLE preferences_per_org RENAME TO preferences;
ALTER TABLE preferences RENAME CONSTRAINT preferences_per_org_pkey TO preferences_pkey;

-- The delivery log pages by this (newest first); request ids are random.
ALTER TABLE deliveries ADD COLUMN seq bigserial;
CREATE UNIQUE INDEX deliveries_seq ON deliveries (seq);

-- migrate:down
DROP INDEX deliveries_seq;
ALTER TABLE deliveries DROP COLUMN seq;
ALTER TABLE preferences DROP CONSTRAINT preferences_pkey;
DELETE FROM preferences a USING preferences b
 WHERE a.email = b.email AND a.kind = b.kind AND (a.changed_at, a.org_id) < (b.changed_at, b.org_id);
ALTER TABLE preferences DROP COLUMN org_id;
ALTER TABLE preferences ADD PRIMARY KEY (email, kind);
