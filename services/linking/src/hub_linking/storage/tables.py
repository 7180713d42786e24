"""The tables the batch state caches: how a row is keyed, read set-based and written back in bulk.

One query per table per batch: the keys of every event of the batch go in as arrays and come back joined
through `unnest` (composite keys), so a batch of 500 won deals reads its deals in one statement, not 500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from hub_linking import rows
from hub_platform.batch import upsert_rows

R = TypeVar("R")
Key = tuple[str, ...]


@dataclass(frozen=True)
class TableSpec(Generic[R]):
    table: str
    row: type[R]
    key: tuple[str, ...]
    version: str | None = None

    @property
    def columns(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.row)]  # type: ignore[arg-type]

    def key_of(self, row: R) -> Key:
        return tuple(getattr(row, k) for k in self.key)


CRM_RECORDS = TableSpec("crm_records", rows.CrmRecord, ("org_id", "record_type", "record_id"), "version")
CUSTOM_FIELDS = TableSpec("crm_custom_fields", rows.CustomField, ("org_id", "module", "field"))
USERS = TableSpec("users", rows.User, ("org_id", "crm_user_id"), "revision")
INTEGRATIONS = TableSpec("integrations", rows.Integration, ("org_id",))
PORTALS = TableSpec("portals", rows.Portal, ("org_id", "portal_id"), "version")
PROJECTS = TableSpec("projects", rows.Project, ("org_id", "portal_id", "project_id"), "version")
CLIENT_COMPANIES = TableSpec("client_companies", rows.ClientCompany, ("org_id", "portal_id", "company_id"), "version")
CLIENT_USERS = TableSpec("client_users", rows.ClientUser, ("org_id", "portal_id", "client_user_id"), "version")
PROJECT_GROUPS = TableSpec("project_groups", rows.ProjectGroup, ("org_id", "portal_id", "group_id"), "version")
PAIRS = TableSpec("customer_pairs", rows.Pair, ("org_id", "portal_id", "kind", "crm_id"))
DEAL_PROJECTS = TableSpec("deal_projects", rows.DealProject, ("org_id", "deal_id"))


def row_of(spec: TableSpec[R], record: asyncpg.Record) -> R:
    return spec.row(**dict(record))


async def load_rows(conn: asyncpg.Connection, spec: TableSpec[R], keys: Sequence[Key]) -> list[R]:
    """The stored rows of `keys` (every key column text), in one statement."""
    k = [f"k{i}" for i in range(len(spec.key))]
    args = ", ".join(f"${i + 1}::text[]" for i in range(len(spec.key)))
    on = " AND ".join(f"t.{c} = u.{k[i]}" for i, c in enumerate(spec.key))
    sql = (f"SELECT {', '.join('t.' + c for c in spec.columns)} FROM {spec.table} t "
           f"JOIN unnest({args}) AS u({', '.join(k)}) ON {on}")
    found = await conn.fetch(sql, *[[key[i] for key in keys] for i in range(len(spec.key))])
    return [row_of(spec, r) for r in found]


async def write_rows(conn: asyncpg.Connection, spec: TableSpec[R], changed: Sequence[R]) -> None:
    """Upsert the changed rows (a versioned table keeps a newer stored row: `WHERE version < EXCLUDED.version`)."""
    await upsert_rows(conn, spec.table, changed, key=spec.key, version=spec.version, columns=spec.columns)


async def insert_new_rows(conn: asyncpg.Connection, spec: TableSpec[R], new: Sequence[R]) -> None:
    """Insert rows that must be written once (a replay or a race keeps the first)."""
    await upsert_rows(conn, spec.table, new, key=spec.key, columns=spec.columns, update=())


async def delete_rows(conn: asyncpg.Connection, spec: TableSpec[Any], keys: Sequence[Key]) -> None:
    if not keys:
        return
    args = ", ".join(f"${i + 1}::text[]" for i in range(len(spec.key)))
    cols = ", ".join(spec.key)
    await conn.execute(f"DELETE FROM {spec.table} WHERE ({cols}) IN (SELECT * FROM unnest({args}))",
                       *[[key[i] for key in keys] for i in range(len(spec.key))])


async def insert_pending(conn: asyncpg.Connection, commands: Sequence[rows.PendingCommand]) -> None:
    await upsert_rows(conn, "pending_commands", commands, key=("command_id",), update=())
