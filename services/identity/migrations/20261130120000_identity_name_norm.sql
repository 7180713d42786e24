-- migrate:up
-- Accounts and client companies are paired on the name as hub_schema.names.normalise_company_name reads it
-- (NFKC, company forms and punctuation dropped: the normaliser linking's matching uses too), no longer on
-- lower(trim(name)). The normaliser is Python and PostgreSQL's regex classes are ASCII-only under the C
-- locale, so SQL cannot compute it exactly: rows stored before this migration keep name_norm NULL and the
-- service normalises them (hub_identity.state, the first batch after start; the partial indexes find them).
ALTER TABLE accounts ADD COLUMN name_norm text;
ALTER TABLE client_companies ADD COLUMN name_norm text;
CREATE INDEX accounts_name_norm ON accounts (org_id, name_norm);
CREATE INDEX client_companies_name_norm ON client_companies (org_id, portal_id, name_norm);
CREATE INDEX accounts_name_unnormalised ON accounts (org_id) WHERE name_norm IS NULL AND name IS NOT NULL;
CREATE INDEX client_companies_name_unnormalised ON client_companies (org_id)
    WHERE name_norm IS NULL AND name IS NOT NULL;

-- migrate:down
ALTER TABLE client_companies DROP COLUMN name_norm;
ALTER TABLE accounts DROP COLUMN name_norm;
