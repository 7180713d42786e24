-- migrate:up
-- Why each command was sent: `change` (an edit mirrored, a create, a resync, a catch-up after a create),
-- `correction` (the change's own side put back to the agreed value: it lost a conflict or was refused by the
-- hub's rules) or `revert` (the source side put back after the target refused `reverts_command_id`).
-- A refused correction or revert is a refusal answered by a refusal: the hub records `conflict` and stops.
ALTER TABLE task_commands
    ADD COLUMN cause text NOT NULL DEFAULT 'change' CHECK (cause IN ('change', 'correction', 'revert')),
    ADD COLUMN reverts_command_id uuid;

-- The per-task command budget (defence in depth against loops nobody has thought of): commands sent in the
-- current window; a task over budget is parked (nothing sent) until a real edit or a resync resumes it.
ALTER TABLE task_mappings
    ADD COLUMN budget_window_start timestamptz,
    ADD COLUMN budget_used integer NOT NULL DEFAULT 0,
    ADD COLUMN parked_at timestamptz,
    ADD COLUMN parked_reason text;
CREATE INDEX task_mappings_parked ON task_mappings (org_id) WHERE parked_at IS NOT NULL;

ALTER TABLE task_decisions DROP CONSTRAINT task_decisions_decision_check;
ALTER TABLE task_decisions ADD CONSTRAINT task_decisions_decision_check
    CHECK (decision IN ('mirrored', 'skipped', 'refused', 'conflict', 'parked', 'resumed'));

-- migrate:down
ALTER TABLE task_decisions DROP CONSTRAINT task_decisions_decision_check;
ALTER TABLE task_decisions ADD CONSTRAINT task_decisions_decision_check
    CHECK (decision IN ('mirrored', 'skipped', 'refused'));
DROP INDEX task_mappings_parked;
ALTER TABLE task_mappings DROP COLUMN budget_window_start, DROP COLUMN budget_used, DROP COLUMN parked_at,
    DROP COLUMN parked_reason;
ALTER TABLE task_commands DROP COLUMN cause, DROP COLUMN reverts_command_id;
