"""Events the task-mirroring service publishes (tasks.events): its decisions and refusals.

Every mirroring decision (mirrored, skipped and why, refused and why) is also
kept in the service's per-task history; these events let the CRM side (and any
other subscriber) show them without reading the service's tables.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field

from hub_schema import topics
from hub_schema.events.common import Reason, ReasonCode, RecordId, RecordRef
from hub_schema.registry import Payload, event

Side = Literal["pm", "crm"]
Decision = Literal["mirrored", "skipped", "refused", "conflict", "parked", "resumed"]
"""`conflict`: both sides refused (a change, then its revert): the hub stopped sending for it.
`parked`: the task used up its command budget; nothing is sent until `resumed` (a real edit or a resync)."""
TaskField = Literal["title", "description", "due_date", "priority", "status", "owner_id"]


@event("tasks.mirror.decided", topic=topics.TASKS_EVENTS)
class TaskMirrorDecided(Payload):
    """What the hub decided about one change of a task coming from `side` (the change's origin).

    `hub_task_id` is None for a task the hub never mapped (e.g. skipped: not flagged, recurring).
    """

    hub_task_id: uuid.UUID | None = None
    side: Side
    pm_task_id: RecordId | None = None
    crm_task_id: RecordId | None = None
    decision: Decision
    reason_code: ReasonCode
    reason: Reason
    fields: Annotated[list[TaskField], Field(max_length=6)] = Field(default_factory=list)


@event("tasks.request.refused", topic=topics.TASKS_EVENTS)
class TaskRequestRefused(Payload):
    """A change made by a CRM user that the hub will not carry into the PM tool, with the reason.

    reason_code: `no_linked_project`, `ambiguous_project`, `project_not_linked`,
    `unsupported_record_type`, `permission_denied` (S12), `parent_task_closed` (S10),
    `schedule_fixed` (S11), or an upstream rejection code.
    """

    hub_task_id: uuid.UUID | None = None
    crm_task_id: RecordId | None = None
    pm_task_id: RecordId | None = None
    record: RecordRef | None = None
    acting_user_id: RecordId | None = None
    reason_code: ReasonCode
    reason: Reason
    fields: Annotated[list[TaskField], Field(max_length=6)] = Field(default_factory=list)
