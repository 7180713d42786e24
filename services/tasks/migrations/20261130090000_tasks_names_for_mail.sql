-- migrate:up
-- What people call things, for the e-mails this service asks for: CRM records (accounts, contacts, deals,
-- leads) and PM projects by name, with the upstream's URL where it gives one. Newest upstream version wins.
CREATE TABLE display_names (
    org_id     text NOT NULL,
    kind       text NOT NULL,
    id         text NOT NULL,
    name       text NOT NULL,
    url        text,
    version    integer NOT NULL,
    PRIMARY KEY (org_id, kind, id)
);

-- The CRM user's time zone (from identity.user_access.changed), for the times in those e-mails.
ALTER TABLE users ADD COLUMN time_zone text;

-- migrate:down
ALTER TABLE users DROP COLUMN time_zone;
DROP TABLE display_names;
