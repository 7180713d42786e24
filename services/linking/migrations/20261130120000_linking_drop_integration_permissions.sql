-- migrate:up
-- The permission profile of an enable travels in the accepted linking.integration.changed only (identity applies
-- it from there); linking never read it back, so it is no longer stored (issue 16).
ALTER TABLE integrations DROP COLUMN permissions;

-- migrate:down
ALTER TABLE integrations ADD COLUMN permissions jsonb NOT NULL DEFAULT '{}'::jsonb;
