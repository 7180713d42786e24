"""Events the linking service publishes (linking.events): the integration's state and record links.

The task-mirroring and identity services keep their own copies of these;
`revision` is linking's per-subject counter, so stale copies are dropped.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from hub_schema import topics
from hub_schema.events.common import (
    EventTypeName,
    JsonObject,
    Name,
    Part,
    Percent,
    PermissionProfile,
    Reason,
    ReasonCode,
    RecordId,
    RecordRef,
)
from hub_schema.events.notifications import MatchingReportPage, MatchingReportSummary
from hub_schema.events.requests import FieldMapping
from hub_schema.registry import Payload, event


@event("linking.integration.changed", topic=topics.LINKING_EVENTS)
class IntegrationChanged(Payload):
    """The org's integration was enabled, disabled, or switched to another portal (S3, S7, S20)."""

    state: Literal["enabled", "disabled"]
    portal_id: RecordId | None = Field(None, description="The portal in use; None when disabled.")
    previous_portal_id: RecordId | None = None
    deal_won_creates_project: bool = False
    changed_by: RecordId
    changed_at: AwareDatetime
    revision: int = Field(ge=1)
    field_mapping: list[FieldMapping] | None = Field(None, description="The saved mapping (S6), when enabled.")
    permissions: PermissionProfile | None = Field(None, description="What CRM users get in the PM tool (S3).")
    matching_pending: bool = Field(False, description=(
        "True when client <-> account matching (S21/S22) runs for this portal as part of this change: a "
        "linking.matching.completed follows on the same key (\"<org>:integration\"). Identity holds new "
        "accounts back until it arrives, so no client company is created for an account matching pairs."))
    profile_request_id: uuid.UUID | None = Field(None, description=(
        "Set when this change is an accepted hub.integration.enable: that request's id. Its `permissions` are "
        "then the profile the admin set, and identity applies them (S3) only now, once linking has accepted the "
        "set-up: a refused enable changes no one's access. A switch or disable carries the settings over and "
        "leaves the profile as it is (hub.permissions.change may have changed it since)."))


@event("linking.link.changed", topic=topics.LINKING_EVENTS)
class LinkChanged(Payload):
    """A PM project was linked to (or unlinked from) a CRM record (S4, S16, S20, S21/S22)."""

    portal_id: RecordId
    project_id: RecordId
    record: RecordRef
    linked: bool
    revision: int = Field(ge=1)


@event("linking.resync.requested", topic=topics.LINKING_EVENTS)
class ResyncRequested(Payload):
    """An admin asked for an explicit resync (S7): the task service reconciles both sides."""

    request_id: uuid.UUID
    portal_id: RecordId
    requested_by: RecordId


# --- added by the linking service (additive; consumers may ignore them) -------------------------



@event("linking.request.refused", topic=topics.LINKING_EVENTS)
class LinkingRequestRefused(Payload):
    """A request linking will not carry out, with the reason a person can act on.

    Codes: not_admin, unknown_user, permission_denied, portal_unknown, portal_inactive,
    plan_required (S17), invalid_field_mapping (S6), integration_disabled, stale_request,
    not_found, already_linked, not_linked, contact_not_offered, contact_in_other_company,
    no_client_company, duplicate_email (S19), crm_user_not_in_portal, use_switch_portal.
    """

    request_id: uuid.UUID
    request_type: EventTypeName
    acting_user_id: RecordId
    reason_code: ReasonCode
    reason: Reason
    details: JsonObject = Field(default_factory=dict)


class AssociableProjectItem(Part):
    """A project offered for association (S4) with what the picker shows."""

    project_id: RecordId
    name: Name
    status: str
    progress_percent: Percent


@event("linking.associable_projects.listed", topic=topics.LINKING_EVENTS)
class AssociableProjectsListed(Payload):
    """Answer to hub.projects.list_associable (S4): projects the user may associate, not yet linked."""

    request_id: uuid.UUID
    acting_user_id: RecordId
    record: RecordRef
    portal_id: RecordId
    projects: list[AssociableProjectItem] = Field(max_length=1000)


@event("linking.service_key.rotated", topic=topics.LINKING_EVENTS)
class ServiceKeyRotated(Payload):
    """The org's service key was replaced; the previous one stopped working (S24). Never carries the key.

    `key_sha256` (hex) lets the services that serve tenant data check the key themselves.
    """

    key_id: uuid.UUID
    key_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    rotated_by: RecordId
    rotated_at: AwareDatetime


@event("linking.sync.stopped", topic=topics.LINKING_EVENTS)
class SyncStopped(Payload):
    """The integration was disabled (S7): links are hidden, nothing is deleted upstream, task sync stops."""

    portal_id: RecordId
    stopped_by: RecordId
    stopped_at: AwareDatetime


@event("linking.matching.page", topic=topics.LINKING_EVENTS)
class MatchingPage(Payload):
    """Rows of a client ↔ account matching run (S21/S22), sent before its linking.matching.completed on the
    same key ("<org>:integration"); identity adopts the matched pairs page by page."""

    report_id: uuid.UUID
    portal_id: RecordId
    rows: MatchingReportPage


@event("linking.matching.completed", topic=topics.LINKING_EVENTS, version=2)
class MatchingCompleted(Payload):
    """Client ↔ account matching finished (S21/S22): counts and the report's id, its rows having gone before as
    `report.pages` linking.matching.page events. The same report goes to the admin by e-mail.

    v2: v1 carried the rows inline (at most 1,000 + 1,000, silently cut; past ≈1,500 clients over the message limit).
    """

    report: MatchingReportSummary
    requested_by: RecordId
    projects_linked: int = Field(ge=0)


@event("linking.project.associated", topic=topics.LINKING_EVENTS)
class ProjectAssociated(Payload):
    """A project was associated with a record (S4, S9): who was added and which commands went to the PM tool."""

    request_id: uuid.UUID
    acting_user_id: RecordId
    portal_id: RecordId
    project_id: RecordId
    record: RecordRef
    project_user_ids: list[RecordId] = Field(default_factory=list, max_length=1000)
    crm_user_ids: list[RecordId] = Field(default_factory=list, max_length=1000)
    client_contact_ids: list[RecordId] = Field(default_factory=list, max_length=1000)
    command_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)


@event("linking.project_creation.requested", topic=topics.LINKING_EVENTS)
class ProjectCreationRequested(Payload):
    """The hub asked the PM tool to create a project (S9, S14, S19); linked when the echo arrives."""

    command_id: uuid.UUID
    portal_id: RecordId
    trigger: Literal["deal_won", "create_from_record"]
    records: list[RecordRef] = Field(max_length=100)
