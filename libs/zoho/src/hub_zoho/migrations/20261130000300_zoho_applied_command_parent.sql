-- migrate:up
-- A PM command runs in steps (group, client company, client users, project), each remembered under an id of
-- its own; the command's id beside it lets the poll publish a record a step created as the command's echo.
ALTER TABLE applied_commands ADD COLUMN parent_command_id uuid;
CREATE INDEX applied_commands_by_record ON applied_commands (org_id, module, record_id);

-- migrate:down
DROP INDEX applied_commands_by_record;
ALTER TABLE applied_commands DROP COLUMN parent_command_id;
