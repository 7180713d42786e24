"""Change events from the PM tool (published on pm.ingest by the PM connector or the sandbox).

Every PM record lives in a portal (the PM tenant); ids are unique within it.
Upserts carry the whole record as it is now, never a diff.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import Field

from hub_schema import topics
from hub_schema.events.common import (
    CustomFields,
    Email,
    EventTypeName,
    IdList,
    JsonObject,
    Name,
    Percent,
    PmRole,
    Priority,
    Reason,
    RecordId,
    RejectionCode,
    TaskStatus,
    Text,
    Versioned,
)
from hub_schema.registry import Payload, event

PmPlan = Literal["free", "paid"]
ProjectStatus = Literal["active", "completed", "on_hold", "archived"]


@event("pm.portal.upserted", topic=topics.PM_INGEST)
class PmPortalUpserted(Versioned):
    """A portal; only a paid plan may be integrated (S17)."""

    id: RecordId
    name: Name
    plan: PmPlan
    active: bool


@event("pm.portal_user.upserted", topic=topics.PM_INGEST)
class PmPortalUserUpserted(Versioned):
    """A staff user of the portal; matched to a CRM user by e-mail."""

    portal_id: RecordId
    id: RecordId
    email: Email
    name: Name
    role: PmRole
    active: bool


@event("pm.portal_user.removed", topic=topics.PM_INGEST)
class PmPortalUserRemoved(Versioned):
    portal_id: RecordId
    id: RecordId


@event("pm.client_company.upserted", topic=topics.PM_INGEST)
class PmClientCompanyUpserted(Versioned):
    """A client organisation; matched to a CRM account (S13, S21/S22)."""

    portal_id: RecordId
    id: RecordId
    name: Name


@event("pm.client_company.deleted", topic=topics.PM_INGEST)
class PmClientCompanyDeleted(Versioned):
    portal_id: RecordId
    id: RecordId


@event("pm.client_user.upserted", topic=topics.PM_INGEST)
class PmClientUserUpserted(Versioned):
    """A client user; belongs to exactly one client company, its e-mail is unique in the portal (S4, S19)."""

    portal_id: RecordId
    id: RecordId
    email: Email
    name: Name
    client_company_id: RecordId


@event("pm.client_user.removed", topic=topics.PM_INGEST)
class PmClientUserRemoved(Versioned):
    portal_id: RecordId
    id: RecordId


@event("pm.project.upserted", topic=topics.PM_INGEST)
class PmProjectUpserted(Versioned):
    """A project with what the Projects tab shows (status, progress: S2) and who is in it (S4)."""

    portal_id: RecordId
    id: RecordId
    name: Name
    description: Text | None = None
    owner_id: RecordId
    group_id: RecordId | None = None
    status: ProjectStatus
    progress_percent: Percent
    schedule_fixed: bool
    start_date: date | None = None
    end_date: date | None = None
    custom_fields: CustomFields = Field(default_factory=dict)
    user_ids: IdList = Field(default_factory=list)
    client_company_ids: IdList = Field(default_factory=list)
    client_user_ids: IdList = Field(default_factory=list)


@event("pm.project.deleted", topic=topics.PM_INGEST)
class PmProjectDeleted(Versioned):
    portal_id: RecordId
    id: RecordId


@event("pm.project_group.upserted", topic=topics.PM_INGEST)
class PmProjectGroupUpserted(Versioned):
    """A project group (S9)."""

    portal_id: RecordId
    id: RecordId
    name: Name


@event("pm.project_group.deleted", topic=topics.PM_INGEST)
class PmProjectGroupDeleted(Versioned):
    portal_id: RecordId
    id: RecordId


@event("pm.task.upserted", topic=topics.PM_INGEST)
class PmTaskUpserted(Versioned):
    """A PM task. Mirrored to the CRM only if `add_to_crm` and not `recurring` (S5)."""

    portal_id: RecordId
    project_id: RecordId
    id: RecordId
    title: Name
    description: Text | None = None
    due_date: date | None = None
    priority: Priority
    status: TaskStatus
    owner_id: RecordId | None = None
    parent_task_id: RecordId | None = None
    recurring: bool
    add_to_crm: bool


@event("pm.task.deleted", topic=topics.PM_INGEST)
class PmTaskDeleted(Versioned):
    portal_id: RecordId
    project_id: RecordId
    id: RecordId


@event("pm.comment.added", topic=topics.PM_INGEST)
class PmCommentAdded(Versioned):
    """A comment on a task; on a mirrored task it becomes a note on the linked records (S5)."""

    portal_id: RecordId
    project_id: RecordId
    task_id: RecordId
    id: RecordId
    body: Text
    author_id: RecordId
    author_name: Name


@event("pm.command.rejected", topic=topics.PM_INGEST)
class PmCommandRejected(Payload):
    """The PM tool refused a hub command; nothing of it was applied (e.g. S10, S11, S19)."""

    command_id: uuid.UUID
    command_type: EventTypeName
    reason_code: RejectionCode
    reason: Reason
    details: JsonObject = Field(default_factory=dict)
