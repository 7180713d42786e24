-- migrate:up
-- Zoho CRM v5+ reaches records past the first 2,000 of a listing only by page token: a backfill resumed
-- after an interruption goes on with the token its last page gave (tokens live a day).
ALTER TABLE cursors ADD COLUMN page_token text;

-- migrate:down
ALTER TABLE cursors DROP COLUMN page_token;
