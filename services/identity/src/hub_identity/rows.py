"""Identity's rows as typed, immutable values: what the batch state loads, handlers read and flush writes.

Each class is one table; its field names are the table's columns (so `hub_platform.batch.upsert_rows` writes it
as it is) and `KEY` names its primary key. Immutable on purpose: a change is a new row handed to the state
(`state.<table>.put(...)`), which is how the state knows what to write and keeps its look-up indexes right.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from hub_schema.names import normalise_company_name


@dataclass(frozen=True, slots=True)
class Org:
    """The org <-> portal pairing, as told by linking.integration.changed."""

    KEY: ClassVar[tuple[str, ...]] = ("org_id",)
    org_id: str
    state: str = "disabled"
    portal_id: str | None = None
    integration_revision: int = 0
    matching_pending: bool = False

    @property
    def portal(self) -> str | None:
        """The portal the org is integrated with, or None while the integration is not enabled."""
        return self.portal_id if self.state == "enabled" else None


@dataclass(frozen=True, slots=True)
class CrmUser:
    KEY: ClassVar[tuple[str, ...]] = ("org_id", "crm_user_id")
    org_id: str
    crm_user_id: str
    email: str
    email_norm: str
    name: str
    locale: str
    time_zone: str | None
    active: bool
    is_admin: bool
    version: int
    modified_at: datetime
    portal_id: str | None = None
    portal_user_id: str | None = None
    access_revision: int = 0


@dataclass(frozen=True, slots=True)
class PortalUser:
    KEY: ClassVar[tuple[str, ...]] = ("org_id", "portal_id", "id")
    org_id: str
    portal_id: str
    id: str
    version: int
    email: str | None = None
    email_norm: str | None = None
    name: str | None = None
    role: str | None = None
    active: bool = False
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Account:
    KEY: ClassVar[tuple[str, ...]] = ("org_id", "id")
    org_id: str
    id: str
    version: int
    name: str | None = None
    name_norm: str | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Contact:
    KEY: ClassVar[tuple[str, ...]] = ("org_id", "id")
    org_id: str
    id: str
    version: int
    account_id: str | None = None
    name: str | None = None
    email: str | None = None
    email_norm: str | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ClientCompany:
    KEY: ClassVar[tuple[str, ...]] = ("org_id", "portal_id", "id")
    org_id: str
    portal_id: str
    id: str
    version: int
    name: str | None = None
    name_norm: str | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ClientUser:
    KEY: ClassVar[tuple[str, ...]] = ("org_id", "portal_id", "id")
    org_id: str
    portal_id: str
    id: str
    version: int
    email: str | None = None
    email_norm: str | None = None
    name: str | None = None
    client_company_id: str | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Mapping:
    """account <-> client company or contact <-> client user in one portal (S13)."""

    KEY: ClassVar[tuple[str, ...]] = ("org_id", "portal_id", "kind", "crm_id")
    org_id: str
    portal_id: str
    kind: str
    crm_id: str
    pm_id: str | None
    state: str
    pending_command_id: uuid.UUID | None = None
    revision: int = 1

    @property
    def pairs_pm(self) -> tuple[str, str, str, str] | None:
        """The PM record it holds (one PM record, one live mapping: the table's unique index)."""
        if self.pm_id is None or self.state == "unlinked":
            return None
        return (self.org_id, self.portal_id, self.kind, self.pm_id)


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """A command identity sent to the PM side, kept until its echo or its rejection comes back."""

    KEY: ClassVar[tuple[str, ...]] = ("command_id",)
    command_id: uuid.UUID
    org_id: str
    command_type: str
    subject_kind: str
    subject_id: str
    request_id: uuid.UUID | None = None


def name_norm(name: str | None) -> str | None:
    """What accounts and client companies are paired on (hub_schema's normaliser, the same as linking's):
    None without a name, '' for a name that is only a company form (never paired on)."""
    return None if name is None else normalise_company_name(name)
