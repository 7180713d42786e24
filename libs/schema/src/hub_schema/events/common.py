"""Types shared by the payload modules.

Nothing here is registered as an event. Values are validated, never rewritten:
an e-mail keeps its case and spaces as the upstream sent it, because matching
rules (trim, case-insensitive) belong to the services that match.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from hub_schema.registry import Payload

H = TypeVar("H", bound=Hashable)

# --- scalar types -----------------------------------------------------------

Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
"""An e-mail address as the upstream holds it (validated, not normalised)."""

RecordId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
"""An id of a record in the CRM or the PM tool (opaque to the hub)."""

OrgId = Annotated[str, StringConstraints(min_length=1, max_length=80)]
"""A CRM org (the tenant); same limits as the envelope's org_id."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
"""A display name or title."""

Text = Annotated[str, StringConstraints(max_length=32_000)]
"""Free text: descriptions, note and comment bodies."""

FieldName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
"""An API name of a CRM or PM field (e.g. `Expected_Revenue`, `budget`)."""

ReasonCode = Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=r"^[a-z][a-z0-9_]*$")]
"""A machine-readable reason (snake_case)."""

Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
"""A reason a person can act on."""

EventTypeName = Annotated[str, StringConstraints(min_length=3, max_length=120, pattern=r"^[a-z][a-z0-9_.]+$")]
"""An event type string, e.g. the type of the command a rejection answers."""

Percent = Annotated[int, Field(ge=0, le=100)]

CustomFieldValue = str | int | float | bool | None
CustomFields = Annotated[dict[FieldName, CustomFieldValue], Field(max_length=500)]
"""Custom field values by API name; dates and picklists arrive as strings."""

JsonObject = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=100)], JsonValue], Field(max_length=200)]
"""Strict but open data (template variables, rejection details): JSON values only."""


def unique_items(items: Sequence[H]) -> Sequence[H]:
    if len(set(items)) != len(items):
        raise ValueError("items must be unique")
    return items


IdList = Annotated[list[RecordId], Field(max_length=1000), AfterValidator(unique_items)]
"""A set of ids sent as a list: no duplicates, at most 1000."""

# --- enumerations -----------------------------------------------------------

CrmRecordType = Literal["account", "contact", "deal", "lead"]
"""CRM records a project can be linked to (S4, S16) and tasks/notes hang off."""

TaskStatus = Literal["open", "closed"]
Priority = Literal["none", "low", "medium", "high"]
PmRole = Literal["admin", "manager", "employee", "contractor"]
Permission = Literal["add_task", "edit_project", "associate_project", "add_users"]
Locale = Literal["ja", "en"]

Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
"""Where a person opens the record in the upstream tool (the e-mails link names to it)."""

TimeZone = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$", max_length=64)]
"""An IANA time zone name such as `Asia/Tokyo` or `UTC` (the e-mails show times in it)."""

RejectionCode = Literal[
    "parent_task_closed",  # S10: the parent task is closed in the PM tool
    "schedule_fixed",  # S11: due date change in a fixed-schedule project
    "duplicate_email",  # S19: client-user e-mails are unique per portal
    "permission_denied",
    "not_found",
    "version_conflict",  # base_version is behind the upstream record
    "locked",  # the record is locked against changes from the integration
    "plan_required",  # S17: needs a paid PM plan
    "invalid",
    "other",
]
"""Why an upstream refused a hub command."""

# --- bases ------------------------------------------------------------------


class Part(BaseModel):
    """A nested value inside a payload: as strict as a payload, but not an event."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Versioned(Payload):
    """Base of every upstream change event.

    `modified_at` and `version` (the upstream's record revision, not the schema
    version in the envelope) let a service drop stale and out-of-order events:
    apply an event only if its version is newer than the one already applied.
    A delete carries the revision of the deletion, so an upsert that arrives
    after it is recognised as stale.

    `command_id` is set by the connector when the change applied a hub command:
    that is the echo the hub must not mirror back (loop prevention), and how
    the hub learns the upstream id of a record it asked to create.
    `acting_user_id` is the upstream user who made the change, when a person did.
    """

    modified_at: AwareDatetime
    version: int = Field(ge=0)
    acting_user_id: RecordId | None = None
    command_id: uuid.UUID | None = None


class RecordRef(Part):
    """A CRM record."""

    record_type: CrmRecordType
    record_id: RecordId


class PermissionProfile(Part):
    """The role and permissions CRM users get in the PM tool (S3, S23)."""

    role: PmRole
    permissions: Annotated[list[Permission], AfterValidator(unique_items)]


def check_group_choice(group_id: str | None, new_group_name: str | None) -> None:
    """A project goes into an existing group or a new one (S9), not both."""
    if group_id is not None and new_group_name is not None:
        raise ValueError("give group_id or new_group_name, not both")
