-- migrate:up
-- A command for an org the sandbox does not host is ignored and counted (a separate connector would never see it).
ALTER TABLE message_log DROP CONSTRAINT message_log_what_check;
ALTER TABLE message_log ADD CONSTRAINT message_log_what_check
    CHECK (what IN ('command_applied', 'command_rejected', 'command_duplicate', 'command_ignored', 'event_emitted'));

-- migrate:down
DELETE FROM message_log WHERE what = 'command_ignored';
ALTER TABLE message_log DROP CONSTRAINT message_log_what_check;
ALTER TABLE message_log ADD CONSTRAINT message_log_what_check
    CHECK (what IN ('command_applied', 'command_rejected', 'command_duplicate', 'event_emitted'));
