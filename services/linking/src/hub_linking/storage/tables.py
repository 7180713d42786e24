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
from hub_platform.batch import LoadRound, upsert_rows

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
    return spec.row(**{c: record[c] for c in spec.columns})


def _keys_join(r: LoadRound, spec: TableSpec[Any], keys: Sequence[Key]) -> str:
    """`JOIN unnest(the keys, one text array per key column) ON` the table's key columns."""
    k = [f"k{i}" for i in range(len(spec.key))]
    args = ", ".join(r.arg([key[i] for key in keys], "text[]") for i in range(len(spec.key)))
    on = " AND ".join(f"t.{c} = u.{k[i]}" for i, c in enumerate(spec.key))
    return f"JOIN unnest({args}) AS u({', '.join(k)}) ON {on}"


def query_rows(r: LoadRound, spec: TableSpec[Any], keys: Sequence[Key]) -> None:
    """The stored rows of `keys` (every key column text), as one load of the round named after the table."""
    r.add(spec.table, f"SELECT t FROM {spec.table} t {_keys_join(r, spec, keys)}")


def query_account_pairs_of_integrations(r: LoadRound, accounts: Sequence[tuple[str, str]]) -> None:
    """The pairs of (org, CRM account)s on each org's integrated portal, as the integration stands (a won deal's
    account: the loads cannot know the portal before the integration is read, so the join reads it)."""
    orgs, ids = r.arg([a[0] for a in accounts], "text[]"), r.arg([a[1] for a in accounts], "text[]")
    r.add("account_pairs", f"SELECT t FROM {PAIRS.table} t JOIN {INTEGRATIONS.table} i "
                           "ON i.org_id = t.org_id AND i.portal_id = t.portal_id "
                           f"JOIN unnest({orgs}, {ids}) AS u(o, a) ON t.org_id = u.o AND t.crm_id = u.a "
                           "WHERE t.kind = 'account'")


async def load_rows(conn: asyncpg.Connection, spec: TableSpec[R], keys: Sequence[Key]) -> list[R]:
    """The stored rows of `keys`, in one statement."""
    r = LoadRound()
    query_rows(r, spec, keys)
    return [row_of(spec, x) for x in (await r.fetch(conn))[spec.table]]


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
