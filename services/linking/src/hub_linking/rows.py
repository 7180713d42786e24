"""The linking service's stored rows as typed, immutable objects (one dataclass per table, fields = columns).

Why frozen: handlers change a row by replacing it (`dataclasses.replace`) in the batch state, so a savepoint's
snapshot of the state is a shallow copy of its dictionaries, and nothing a handler holds changes under it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub_linking.domain import Actor


@dataclass(frozen=True)
class CrmRecord:
    """An account, contact, deal or lead as last seen (crm_records)."""

    org_id: str
    record_type: str
    record_id: str
    version: int
    name: str = ""
    account_id: str | None = None
    email: str | None = None
    won: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    @property
    def own_account_id(self) -> str | None:
        """The account a record belongs to: itself for an account, its account_id otherwise."""
        return self.record_id if self.record_type == "account" else self.account_id


@dataclass(frozen=True)
class CustomField:
    org_id: str
    module: str
    field: str
    value_kind: str


@dataclass(frozen=True)
class User:
    """identity.user_access.changed as last seen (users)."""

    org_id: str
    crm_user_id: str
    email: str
    name: str
    locale: str
    active: bool
    is_admin: bool
    portal_id: str | None
    portal_user_id: str | None
    role: str
    permissions: list[str]
    revision: int
    time_zone: str | None = None

    def actor(self) -> Actor:
        return Actor(crm_user_id=self.crm_user_id, active=self.active, is_admin=self.is_admin,
                     permissions=frozenset(self.permissions), portal_user_id=self.portal_user_id,
                     email=self.email, name=self.name, locale=self.locale, time_zone=self.time_zone)


@dataclass(frozen=True)
class Integration:
    """The integration's settings of one CRM org (integrations)."""

    org_id: str
    state: str
    portal_id: str
    field_mapping: list[dict[str, Any]]
    deal_won_creates_project: bool
    enabled_by: str
    revision: int
    matched_portals: list[str]
    changed_at: datetime

    @property
    def enabled(self) -> bool:
        return self.state == "enabled"


@dataclass(frozen=True)
class Portal:
    org_id: str
    portal_id: str
    name: str
    plan: str
    active: bool
    version: int


@dataclass(frozen=True)
class Project:
    org_id: str
    portal_id: str
    project_id: str
    name: str
    status: str
    progress_percent: int
    owner_id: str
    version: int
    group_id: str | None = None
    user_ids: list[str] = field(default_factory=list)
    client_company_ids: list[str] = field(default_factory=list)
    client_user_ids: list[str] = field(default_factory=list)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False


@dataclass(frozen=True)
class ClientCompany:
    org_id: str
    portal_id: str
    company_id: str
    name: str
    version: int
    deleted: bool = False


@dataclass(frozen=True)
class ClientUser:
    org_id: str
    portal_id: str
    client_user_id: str
    email: str
    name: str
    company_id: str
    version: int
    deleted: bool = False


@dataclass(frozen=True)
class ProjectGroup:
    org_id: str
    portal_id: str
    group_id: str
    name: str
    version: int
    deleted: bool = False


@dataclass(frozen=True)
class Pair:
    """account ↔ client company or contact ↔ client user (customer_pairs)."""

    org_id: str
    portal_id: str
    kind: str
    crm_id: str
    pm_id: str
    revision: int = 0


@dataclass(frozen=True)
class DealProject:
    """The one project a won deal asked for (deal_projects)."""

    org_id: str
    deal_id: str
    command_id: uuid.UUID


@dataclass(frozen=True)
class PendingCommand:
    """A command sent to the PM tool whose echo the hub waits for (pending_commands)."""

    command_id: uuid.UUID
    org_id: str
    kind: str
    portal_id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Link:
    org_id: str
    portal_id: str
    project_id: str
    record_type: str
    record_id: str
    active: bool
    revision: int
    source: str
