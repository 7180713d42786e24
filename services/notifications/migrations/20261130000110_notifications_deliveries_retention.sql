-- migrate:up
-- The retention job deletes finished deliveries older than HUB_RETENTION__DELIVERIES_DAYS by this column.
CREATE INDEX deliveries_finished_at ON deliveries (updated_at) WHERE state IN ('sent', 'failed', 'suppressed');

-- migrate:down
DROP INDEX deliveries_finished_at;
