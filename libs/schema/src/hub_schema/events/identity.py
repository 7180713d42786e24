"""Events the identity service publishes (identity.events).

Other services decide "may this CRM user do X in the PM tool" from
`identity.user_access.changed`, never by reading identity's tables. Each event
carries a per-subject `revision` (identity's own counter) so a consumer keeps
the newest and drops stale copies.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import AwareDatetime, Field

from hub_schema import topics
from hub_schema.events.common import (
    Email,
    EventTypeName,
    Locale,
    Name,
    Part,
    PermissionProfile,
    Reason,
    ReasonCode,
    RecordId,
    TimeZone,
)
from hub_schema.registry import Payload, event


@event("identity.user_access.changed", topic=topics.IDENTITY_EVENTS)
class UserAccessChanged(Payload):
    """What a CRM user may do in the PM tool from `effective_from` on (S3, S23), and their portal user."""

    crm_user_id: RecordId
    email: Email = Field(description="Normalised: trimmed, lower-case.")
    name: Name
    locale: Locale
    time_zone: TimeZone | None = Field(None, description="The CRM user's IANA time zone, when the CRM gives one.")
    active: bool
    is_admin: bool = Field(description="CRM admin: may change the integration's settings, import users.")
    portal_id: RecordId | None = None
    portal_user_id: RecordId | None = Field(None, description="The matched portal user, when there is one.")
    profile: PermissionProfile
    effective_from: AwareDatetime
    revision: int = Field(ge=1)


@event("identity.permission_profile.changed", topic=topics.IDENTITY_EVENTS)
class PermissionProfileChanged(Payload):
    """The org's profile for CRM users changed (S23); applies to actions from `effective_from` on."""

    profile: PermissionProfile
    changed_by: RecordId
    effective_from: AwareDatetime
    revision: int = Field(ge=1)


@event("identity.customer_mapping.changed", topic=topics.IDENTITY_EVENTS)
class CustomerMappingChanged(Payload):
    """An account ↔ client company or contact ↔ client user pair (S13)."""

    portal_id: RecordId
    kind: Literal["account", "contact"]
    crm_id: RecordId
    pm_id: RecordId | None = Field(None, description="None while the PM side has not created it yet.")
    state: Literal["pending", "linked", "unlinked"]
    revision: int = Field(ge=1)


class ImportedUser(Part):
    crm_user_id: RecordId
    email: Email


class SkippedUser(Part):
    crm_user_id: RecordId
    reason_code: ReasonCode
    reason: Reason


@event("identity.import.completed", topic=topics.IDENTITY_EVENTS)
class ImportCompleted(Payload):
    """Outcome of an import of CRM users into the PM tool (S18)."""

    request_id: uuid.UUID
    imported_as: Literal["portal_user", "client_user"]
    added: list[ImportedUser]
    skipped: list[SkippedUser]


@event("identity.request.refused", topic=topics.IDENTITY_EVENTS)
class IdentityRequestRefused(Payload):
    """A request identity will not carry out (not an admin, duplicate e-mails S19, ...), with the reason."""

    request_id: uuid.UUID
    request_type: EventTypeName
    acting_user_id: RecordId
    reason_code: ReasonCode
    reason: Reason
