"""The service's rows as typed objects: what storage loads, the batch state holds and the handlers change.

Field names are the column names (`hub_platform.batch.upsert_rows` writes them as they are), except
`Mapping.state`, which is the parsed `domain.State` of the jsonb column.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub_tasks.domain import State


@dataclass
class Integration:
    org_id: str
    enabled: bool
    portal_id: str | None
    revision: int


@dataclass
class Link:
    org_id: str
    portal_id: str
    project_id: str
    record_type: str
    record_id: str
    linked: bool
    revision: int


@dataclass
class User:
    org_id: str
    crm_user_id: str
    email: str
    name: str
    locale: str
    active: bool
    portal_user_id: str | None
    permissions: list[str]
    revision: int
    time_zone: str | None = None


@dataclass
class Project:
    org_id: str
    project_id: str
    portal_id: str
    schedule_fixed: bool
    version: int
    deleted: bool = False


@dataclass
class DisplayName:
    org_id: str
    kind: str
    id: str
    name: str
    url: str | None
    version: int


@dataclass
class PmTask:
    """The latest known PM task (for resync back-fill, S10 parent checks, staleness); `fields` in canonical terms."""

    org_id: str
    task_id: str
    portal_id: str
    project_id: str
    parent_task_id: str | None
    status: str
    recurring: bool
    add_to_crm: bool
    fields: dict[str, Any]
    modified_at: datetime
    version: int
    deleted: bool = False


@dataclass
class CrmTask:
    org_id: str
    task_id: str
    record_type: str
    record_id: str
    version: int
    deleted: bool = False


@dataclass
class Mapping:
    """One PM task ↔ one CRM task on one linked record, with its merge state and command budget."""

    hub_task_id: uuid.UUID
    org_id: str
    origin: str
    portal_id: str
    project_id: str
    pm_task_id: str | None
    record_type: str
    record_id: str
    crm_task_id: str | None
    state: State
    pm_version: int | None
    crm_version: int | None
    budget_window_start: datetime | None = None
    budget_used: int = 0
    parked_at: datetime | None = None
    parked_reason: str | None = None

    def ids(self) -> dict[str, Any]:
        """The ids a decision about this mapping is recorded under."""
        return {"hub_task_id": self.hub_task_id, "pm_task_id": self.pm_task_id, "crm_task_id": self.crm_task_id}

    def version_of(self, side: str) -> int | None:
        return self.pm_version if side == "pm" else self.crm_version

    def task_id_of(self, side: str) -> str | None:
        return self.pm_task_id if side == "pm" else self.crm_task_id


@dataclass
class Command:
    """A command the service sent: how its echo and its rejection are recognised."""

    command_id: uuid.UUID
    hub_task_id: uuid.UUID
    org_id: str
    target: str
    kind: str
    changes: dict[str, Any]
    source_at: dict[str, str]
    acting_user_id: str | None
    cause: str = "change"
    reverts_command_id: uuid.UUID | None = None
    outcome: str | None = None


@dataclass
class Decision:
    """One line of a task's history (`task_decisions`), written in the order the decisions were taken."""

    org_id: str
    hub_task_id: uuid.UUID | None
    pm_task_id: str | None
    crm_task_id: str | None
    side: str
    event_id: uuid.UUID | None
    event_type: str | None
    decision: str
    reason_code: str
    reason: str
    fields: list[str] = field(default_factory=list)
