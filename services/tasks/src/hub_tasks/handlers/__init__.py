"""Handlers of the task-mirroring service, one module per aggregate; `router` runs them all.

Decisions taken deliberately:
- Unknown org or integration not enabled (or an event from another portal than
  the enabled one): nothing is mirrored; the change is recorded in the history
  as skipped(integration_disabled) and each side's latest values are still
  tracked, so an explicit resync (`linking.resync.requested`, S7) can reconcile.
  Re-enabling alone back-fills nothing.
- A PM task mirrors to one CRM task per linked contact, account and deal of
  its project (one mapping = one `hub_task_id` per pair); leads are not used. At most
  `HUB_TASKS__MAX_MIRRORED_RECORDS` (20) records: past that the task is refused as a whole
  (`too_many_linked_records`, one e-mail to its owner), see `domain.too_many_records`.
- S10/S11 are decided here from the projections before anything is sent; a
  refused CRM change is reverted on the CRM side (so both sides agree again),
  a `tasks.request.refused` is published and the acting CRM user is e-mailed.
  The same happens when the PM tool itself rejects a hub command.
- Deletes are recorded but not mirrored.
- Every decision goes to `task_decisions` and is published as `tasks.mirror.decided`.
- Two sides that both say no (issue 14): a refused revert or correction is recorded as one `conflict` and
  nothing more is sent for that change (no second e-mail either); the next real edit on either side goes
  through as usual. One upstream change causes at most `domain.MAX_COMMANDS_PER_CHANGE` (3) commands.
  Whatever else might loop is stopped by the per-task command budget (`HUB_TASKS__COMMAND_BUDGET` commands
  per `HUB_TASKS__BUDGET_WINDOW_SECONDS`): the task is parked (`parked` in its history, the
  `hub_tasks_parked_total` metric, an alert log line) and sends nothing until a real edit or a resync.
- A batch is handled set-based (issue 16): `state.TasksState` loads the rows of every key in the batch up
  front, the handlers change them in record order, and they are written back in bulk.
"""

from __future__ import annotations

from hub_platform import service_keys
from hub_tasks.handlers import crm_tasks, pm_tasks, projections, refusals, resync  # noqa: F401  (they register)
from hub_tasks.handlers.common import configure, router

router.include(service_keys.router)  # the org keys that open the history API

__all__ = ["configure", "router"]
