-- migrate:up
-- The CRM user's time zone (from identity.user_access.changed), so the e-mails show times in it.
ALTER TABLE users ADD COLUMN time_zone text;

-- migrate:down
ALTER TABLE users DROP COLUMN time_zone;
