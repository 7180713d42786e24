"""Requests CRM users make through the integration's UI (hub.requests).

A request is what a person asked for, not yet a decision: the services check
it (admin only, permissions, plan, mapping set) and answer with their own
events (accepted / refused with a reason). `request_id` is the idempotency and
correlation key; `acting_user_id` is the CRM user who asked.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints, model_validator

from hub_schema import topics
from hub_schema.events.common import (
    CrmRecordType,
    FieldName,
    IdList,
    Name,
    Part,
    Permission,
    PermissionProfile,
    PmRole,
    RecordId,
    Text,
    check_group_choice,
    unique_items,
)
from hub_schema.registry import Payload, event

CrmFieldType = Literal[
    "text", "textarea", "integer", "decimal", "currency", "percent", "date", "datetime",
    "boolean", "picklist", "multiselect", "email", "phone", "url", "lookup", "user",
]


class Request(Payload):
    """Base of every request."""

    request_id: uuid.UUID
    acting_user_id: RecordId


class FieldMapping(Part):
    """One PM project field filled from a CRM field of deals or accounts, custom ones included (S3, S6)."""

    pm_field: FieldName
    crm_module: Literal["deals", "accounts"]
    crm_field: FieldName
    crm_field_type: CrmFieldType | None = None


class CrmUserGrant(Part):
    """A CRM user to add to a project, with the role and permissions shown (and possibly changed) for them (S4)."""

    user_id: RecordId
    role: PmRole
    permissions: Annotated[list[Permission], AfterValidator(unique_items)]


def _one_grant_per_user(grants: list[CrmUserGrant]) -> list[CrmUserGrant]:
    unique_items([g.user_id for g in grants])
    return grants


CrmUserGrants = Annotated[list[CrmUserGrant], Field(max_length=1000), AfterValidator(_one_grant_per_user)]


@event("hub.integration.enable", topic=topics.HUB_REQUESTS)
class IntegrationEnable(Request):
    """Set up the integration: portal, field mapping, CRM users' permissions (S3, S6, S14, S17)."""

    portal_id: RecordId
    field_mapping: Annotated[list[FieldMapping], Field(max_length=200)]
    permissions: PermissionProfile
    deal_won_creates_project: bool

    @model_validator(mode="after")
    def _one_source_per_pm_field(self) -> IntegrationEnable:
        unique_items([m.pm_field for m in self.field_mapping])
        return self


@event("hub.integration.disable", topic=topics.HUB_REQUESTS)
class IntegrationDisable(Request):
    """Disable the integration for the portal (S7); a request naming another portal than the current one is stale."""

    portal_id: RecordId


@event("hub.integration.resync", topic=topics.HUB_REQUESTS)
class IntegrationResync(Request):
    """Explicit resync; re-enabling never resyncs on its own (S7)."""

    portal_id: RecordId


@event("hub.integration.switch_portal", topic=topics.HUB_REQUESTS)
class IntegrationSwitchPortal(Request):
    """Deactivate the current portal (its links go) and link the new portal's projects (S20); settings carry over."""

    current_portal_id: RecordId
    new_portal_id: RecordId

    @model_validator(mode="after")
    def _different(self) -> IntegrationSwitchPortal:
        if self.current_portal_id == self.new_portal_id:
            raise ValueError("new_portal_id must differ from current_portal_id")
        return self


@event("hub.service_key.generate", topic=topics.HUB_REQUESTS)
class ServiceKeyGenerate(Request):
    """A new service key replaces the org's old one at once (S24).

    The key is shown to the admin by the UI that generated it and never travels
    on the bus: only its id and SHA-256 (hex) do, which is enough to verify it.
    """

    key_id: uuid.UUID
    key_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@event("hub.permissions.change", topic=topics.HUB_REQUESTS)
class PermissionsChange(Request):
    """New permissions for CRM users in the PM tool, applied from `effective_from` (default: now) on (S23)."""

    permissions: PermissionProfile
    effective_from: AwareDatetime | None = None


@event("hub.users.import", topic=topics.HUB_REQUESTS)
class UsersImport(Request):
    """Import CRM users into the PM tool as portal users or as client users of a company (S18)."""

    user_ids: Annotated[IdList, Field(min_length=1)]
    import_as: Literal["portal_user", "client_user"]
    client_company_id: RecordId | None = None

    @model_validator(mode="after")
    def _company_for_client_users(self) -> UsersImport:
        if (self.import_as == "client_user") != (self.client_company_id is not None):
            raise ValueError("client_company_id is required for client_user imports and only for them")
        return self


@event("hub.project.associate", topic=topics.HUB_REQUESTS)
class ProjectAssociate(Request):
    """Associate (or re-associate) a project with a record, with owner, group, users and client users (S4, S9, S16)."""

    record_type: CrmRecordType
    record_id: RecordId
    project_id: RecordId
    owner_id: RecordId | None = None
    group_id: RecordId | None = None
    new_group_name: Name | None = None
    crm_users: CrmUserGrants = Field(default_factory=list)
    client_contact_ids: IdList = Field(default_factory=list)

    @model_validator(mode="after")
    def _group(self) -> ProjectAssociate:
        check_group_choice(self.group_id, self.new_group_name)
        return self


@event("hub.project.dissociate", topic=topics.HUB_REQUESTS)
class ProjectDissociate(Request):
    """Remove a project from a record's related list; it can be associated again later (S4)."""

    record_type: CrmRecordType
    record_id: RecordId
    project_id: RecordId


@event("hub.project.create_from_record", topic=topics.HUB_REQUESTS)
class ProjectCreateFromRecord(Request):
    """Create a project from a record and link it, optionally in a new group (S9, S19)."""

    record_type: CrmRecordType
    record_id: RecordId
    name: Name
    description: Text | None = None
    owner_id: RecordId | None = None
    group_id: RecordId | None = None
    new_group_name: Name | None = None
    crm_users: CrmUserGrants = Field(default_factory=list)
    client_contact_ids: IdList = Field(default_factory=list)

    @model_validator(mode="after")
    def _group(self) -> ProjectCreateFromRecord:
        check_group_choice(self.group_id, self.new_group_name)
        return self


@event("hub.projects.list_associable", topic=topics.HUB_REQUESTS)
class ProjectsListAssociable(Request):
    """Which projects the acting user may associate with this record (S4); answered by an event."""

    record_type: CrmRecordType
    record_id: RecordId
