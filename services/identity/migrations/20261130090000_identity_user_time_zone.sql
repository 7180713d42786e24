-- migrate:up
-- The CRM user's time zone (optional upstream), so the e-mails show times in it.
ALTER TABLE crm_users ADD COLUMN time_zone text;

-- migrate:down
ALTER TABLE crm_users DROP COLUMN time_zone;
