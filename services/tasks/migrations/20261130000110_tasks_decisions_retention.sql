-- migrate:up
-- The retention job deletes decisions older than HUB_RETENTION__TASK_DECISIONS_DAYS by this column.
CREATE INDEX task_decisions_at ON task_decisions (at);

-- migrate:down
DROP INDEX task_decisions_at;
