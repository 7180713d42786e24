"""Change events from the CRM (published on crm.ingest by the CRM connector or the sandbox).

Upserts carry the whole record as it is now, never a diff, so a consumer that
missed an event catches up with the next one.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from hub_schema import topics
from hub_schema.events.common import (
    CrmRecordType,
    CustomFields,
    Email,
    EventTypeName,
    IdList,
    JsonObject,
    Locale,
    Name,
    OrgId,
    Priority,
    Reason,
    RecordId,
    RejectionCode,
    TaskStatus,
    Text,
    TimeZone,
    Url,
    Versioned,
)
from hub_schema.registry import Payload, event

CrmEdition = Literal["free", "trial", "standard", "professional", "enterprise", "ultimate"]


@event("crm.org.upserted", topic=topics.CRM_INGEST)
class CrmOrgUpserted(Versioned):
    """The CRM org itself; its edition matters for S8 (trial and free editions may integrate)."""

    id: OrgId
    name: Name
    edition: CrmEdition


@event("crm.user.upserted", topic=topics.CRM_INGEST)
class CrmUserUpserted(Versioned):
    """A CRM user; matched to a portal user by e-mail. Only admins may set up the integration (S3)."""

    id: RecordId
    email: Email
    name: Name
    active: bool
    is_admin: bool
    locale: Locale
    time_zone: TimeZone | None = None  # IANA name; the hub's e-mails show times in it


@event("crm.user.deactivated", topic=topics.CRM_INGEST)
class CrmUserDeactivated(Versioned):
    id: RecordId


@event("crm.account.upserted", topic=topics.CRM_INGEST)
class CrmAccountUpserted(Versioned):
    """A customer company; syncs as a client company (S13), custom fields usable in the mapping (S6)."""

    id: RecordId
    name: Name
    owner_id: RecordId | None = None
    custom_fields: CustomFields = Field(default_factory=dict)
    url: Url | None = None  # the record in the CRM's UI, when the CRM gives one


@event("crm.account.deleted", topic=topics.CRM_INGEST)
class CrmAccountDeleted(Versioned):
    id: RecordId


@event("crm.contact.upserted", topic=topics.CRM_INGEST)
class CrmContactUpserted(Versioned):
    """A person at an account; syncs as a client user (S13). E-mails may repeat in the CRM (S19)."""

    id: RecordId
    account_id: RecordId | None
    first_name: Name | None = None
    last_name: Name
    email: Email | None
    owner_id: RecordId | None = None
    url: Url | None = None  # the record in the CRM's UI, when the CRM gives one


@event("crm.contact.deleted", topic=topics.CRM_INGEST)
class CrmContactDeleted(Versioned):
    id: RecordId


@event("crm.deal.upserted", topic=topics.CRM_INGEST)
class CrmDealUpserted(Versioned):
    """A deal; `won` turning true may create a project (S14). Custom fields usable in the mapping (S6)."""

    id: RecordId
    name: Name
    account_id: RecordId | None
    contact_ids: IdList = Field(default_factory=list)
    stage: Name
    amount: Decimal | None = Field(default=None, ge=0)
    closing_date: date | None = None
    won: bool
    owner_id: RecordId | None = None
    custom_fields: CustomFields = Field(default_factory=dict)
    url: Url | None = None  # the record in the CRM's UI, when the CRM gives one


@event("crm.deal.deleted", topic=topics.CRM_INGEST)
class CrmDealDeleted(Versioned):
    id: RecordId


@event("crm.lead.upserted", topic=topics.CRM_INGEST)
class CrmLeadUpserted(Versioned):
    """A lead; projects can be associated with leads too (S4, S16)."""

    id: RecordId
    first_name: Name | None = None
    last_name: Name
    company: Name | None = None
    email: Email | None = None
    owner_id: RecordId | None = None
    url: Url | None = None  # the record in the CRM's UI, when the CRM gives one


@event("crm.lead.deleted", topic=topics.CRM_INGEST)
class CrmLeadDeleted(Versioned):
    id: RecordId


@event("crm.task.upserted", topic=topics.CRM_INGEST)
class CrmTaskUpserted(Versioned):
    """A CRM task on a record. Tasks not related to a record are not published (the hub has no use for them).

    `add_to_pm` is the user's "save and add to the PM tool" (S12); `pm_project_id`
    is the linked project they chose, or None to let the hub use the record's
    linked project (refused if it has none, or more than one).
    """

    id: RecordId
    record_type: CrmRecordType
    record_id: RecordId
    subject: Name
    description: Text | None = None
    due_date: date | None = None
    priority: Priority
    status: TaskStatus
    owner_id: RecordId | None = None
    parent_task_id: RecordId | None = None
    created_by: RecordId
    add_to_pm: bool = False
    pm_project_id: RecordId | None = None

    @model_validator(mode="after")
    def _project_needs_add_to_pm(self) -> CrmTaskUpserted:
        if self.pm_project_id is not None and not self.add_to_pm:
            raise ValueError("pm_project_id is only meaningful with add_to_pm")
        return self


@event("crm.task.deleted", topic=topics.CRM_INGEST)
class CrmTaskDeleted(Versioned):
    id: RecordId


@event("crm.note.created", topic=topics.CRM_INGEST)
class CrmNoteCreated(Versioned):
    """A note on a record; the echo of a note the hub added for a PM comment (S5) carries its command_id."""

    id: RecordId
    record_type: CrmRecordType
    record_id: RecordId
    title: Name | None = None
    body: Text
    author_id: RecordId


@event("crm.command.rejected", topic=topics.CRM_INGEST)
class CrmCommandRejected(Payload):
    """The CRM refused a hub command; nothing of it was applied."""

    command_id: uuid.UUID
    command_type: EventTypeName
    reason_code: RejectionCode
    reason: Reason
    details: JsonObject = Field(default_factory=dict)
