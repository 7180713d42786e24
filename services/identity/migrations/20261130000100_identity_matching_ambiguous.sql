-- migrate:up
-- Client companies a matching run found ambiguous (S21/S22), noted page by page
-- (linking.matching.page) until its linking.matching.completed: then no account is
-- paired with them by name, and the rows go.
CREATE TABLE matching_ambiguous (
    org_id            text NOT NULL,
    report_id         uuid NOT NULL,
    client_company_id text NOT NULL,
    PRIMARY KEY (org_id, report_id, client_company_id)
);

-- migrate:down
DROP TABLE matching_ambiguous;
