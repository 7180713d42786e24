"""What a batch holds (`Tables`) and the base every part of the tasks batch state shares."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from hub_tasks.records import (Command, CrmTask, Decision, DisplayName, Integration, Link, Mapping, PmTask, Project,
                               User)


@dataclass
class Tables:
    """What a batch holds; None = known not to exist. `dirty` names the keys `flush` writes, per table."""

    integrations: dict[str, Integration | None] = field(default_factory=dict)
    users: dict[tuple[str, str], User | None] = field(default_factory=dict)
    users_by_portal: set[tuple[str, str]] = field(default_factory=set)
    projects: dict[tuple[str, str], Project | None] = field(default_factory=dict)
    links: dict[tuple[str, str, str, str], Link] = field(default_factory=dict)
    links_by_project: set[tuple[str, str]] = field(default_factory=set)
    links_by_record: set[tuple[str, str, str]] = field(default_factory=set)
    names: dict[tuple[str, str, str], DisplayName | None] = field(default_factory=dict)
    pm_tasks: dict[tuple[str, str], PmTask | None] = field(default_factory=dict)
    flagged: set[tuple[str, str]] = field(default_factory=set)
    crm_tasks: dict[tuple[str, str], CrmTask | None] = field(default_factory=dict)
    mappings: dict[uuid.UUID, Mapping] = field(default_factory=dict)
    created_at: dict[uuid.UUID, datetime] = field(default_factory=dict)
    by_pm: dict[tuple[str, str], set[uuid.UUID]] = field(default_factory=dict)
    by_crm: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    pm_loaded: set[tuple[str, str]] = field(default_factory=set)
    crm_loaded: set[tuple[str, str]] = field(default_factory=set)
    ids_loaded: set[uuid.UUID] = field(default_factory=set)
    orgs_loaded: set[tuple[str, str]] = field(default_factory=set)
    commands: dict[uuid.UUID, Command | None] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    dirty: dict[str, set[Any]] = field(default_factory=dict)


def _newer(existing: Any, version: int, attr: str = "version") -> bool:
    return existing is None or getattr(existing, attr) < version


class Rows:
    """The batch's tables and the connection lazy reads go through."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.t = Tables()

    def _touch(self, table: str, key: Any) -> None:
        self.t.dirty.setdefault(table, set()).add(key)
