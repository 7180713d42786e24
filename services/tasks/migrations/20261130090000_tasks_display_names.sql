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

-- migrate:down
DROP TABLE display_names;
