"""The linking service's batch state (issue 16): every row a batch's handlers need, read set-based, written in bulk.

`LinkingState.load` reads, for all the events of a batch at once, the rows their handlers will touch (one
statement per table, keys joined through `unnest`); handlers apply the events in record order to these typed
rows; `flush` writes what changed with one bulk statement per table. A row a handler needs that the loader
could not foresee is read on first use and cached (`Table.get`), so it is read at most once per batch.

Request handlers (settings, associations, matching: rare, many tables, read-your-writes SQL) run on the
database directly: they first call `write_through`, which writes the state's changes and forgets the cache,
so what they read is what the events before them left, and what they write is read again by the events after
them. Inside a savepoint this stays right: a refusal rolls back the rows written through and `restore` brings
the state (changes and cache) back to where the savepoint began.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg

from hub_linking import domain, rows
from hub_linking.storage import tables
from hub_linking.storage.tables import Key, TableSpec
from hub_platform.batch import LoadRound
from hub_schema import Event
from hub_schema.events import crm, identity, pm

R = TypeVar("R")


class Table(Generic[R]):
    """The cached rows of one table: key → row (None: known not to exist), and the keys changed since the flush."""

    def __init__(self, spec: TableSpec[R]) -> None:
        self.spec = spec
        self.rows: dict[Key, R | None] = {}
        self.dirty: set[Key] = set()

    async def preload(self, conn: asyncpg.Connection, keys: Iterable[Key]) -> None:
        missing = self.missing(keys)
        if missing:
            self.take(missing, await tables.load_rows(conn, self.spec, missing))

    def missing(self, keys: Iterable[Key]) -> list[Key]:
        """The keys of `keys` not held yet (read or known absent)."""
        return sorted({k for k in keys if k not in self.rows})

    def take(self, keys: Iterable[Key], found: Iterable[R]) -> None:
        """`found` read for `keys` (a key without a row: known absent)."""
        self.rows.update(dict.fromkeys(keys))
        for row in found:
            self.rows[self.spec.key_of(row)] = row

    async def get(self, conn: asyncpg.Connection, key: Key) -> R | None:
        if key not in self.rows:
            await self.preload(conn, [key])
        return self.rows[key]

    def put(self, row: R | None, key: Key | None = None) -> None:
        """Replace a row (None: delete it) as of now; written by the next flush."""
        key = key if key is not None else self.spec.key_of(row)
        self.rows[key] = row
        self.dirty.add(key)

    async def apply(self, conn: asyncpg.Connection, row: R) -> bool:
        """Keep `row` if it is newer than the stored one (the upstream version); True when it was applied."""
        assert self.spec.version is not None
        current = await self.get(conn, self.spec.key_of(row))
        if current is not None and getattr(current, self.spec.version) >= getattr(row, self.spec.version):
            return False
        self.put(row)
        return True

    async def flush(self, conn: asyncpg.Connection) -> None:
        keys = sorted(self.dirty)  # one lock order for every writer
        self.dirty.clear()
        await tables.write_rows(conn, self.spec, [r for k in keys if (r := self.rows[k]) is not None])
        await tables.delete_rows(conn, self.spec, [k for k in keys if self.rows[k] is None])

    def snapshot(self) -> tuple[dict[Key, R | None], set[Key]]:
        return dict(self.rows), set(self.dirty)

    def restore(self, snap: tuple[dict[Key, R | None], set[Key]]) -> None:
        self.rows, self.dirty = dict(snap[0]), set(snap[1])

    def forget(self) -> None:
        assert not self.dirty
        self.rows.clear()


class LinkingState:
    """See the module docstring; one per batch (the careful path: one per event)."""

    def __init__(self) -> None:
        self.records = Table(tables.CRM_RECORDS)
        self.kinds = Table(tables.CUSTOM_FIELDS)
        self.users = Table(tables.USERS)
        self.integrations = Table(tables.INTEGRATIONS)
        self.portals = Table(tables.PORTALS)
        self.projects = Table(tables.PROJECTS)
        self.companies = Table(tables.CLIENT_COMPANIES)
        self.client_users = Table(tables.CLIENT_USERS)
        self.groups = Table(tables.PROJECT_GROUPS)
        self.pairs = Table(tables.PAIRS)
        self.deal_projects = Table(tables.DEAL_PROJECTS)
        self.new_pending: list[rows.PendingCommand] = []

    def _tables(self) -> list[Table[Any]]:
        return [self.records, self.kinds, self.users, self.integrations, self.portals, self.projects, self.companies,
                self.client_users, self.groups, self.pairs, self.deal_projects]

    @classmethod
    async def load(cls, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> LinkingState:
        """Read what the handlers of `events` will need: one statement per table that any of them touches."""
        state = cls()
        want: dict[str, set[Key]] = {name: set() for name in (
            "records", "kinds", "users", "integrations", "portals", "projects", "companies", "client_users", "groups",
            "pairs", "deal_projects")}
        deal_accounts: list[tuple[str, str]] = []
        for event in events:
            org, p = event.org_id, event.payload
            if isinstance(p, (crm.CrmAccountUpserted, crm.CrmAccountDeleted)):
                want["records"].add((org, "account", p.id))
                if isinstance(p, crm.CrmAccountUpserted):
                    want["kinds"].update((org, "accounts", f) for f in p.custom_fields)
            elif isinstance(p, (crm.CrmContactUpserted, crm.CrmContactDeleted)):
                want["records"].add((org, "contact", p.id))
            elif isinstance(p, (crm.CrmLeadUpserted, crm.CrmLeadDeleted)):
                want["records"].add((org, "lead", p.id))
            elif isinstance(p, crm.CrmDealDeleted):
                want["records"].add((org, "deal", p.id))
            elif isinstance(p, crm.CrmDealUpserted):
                want["records"].add((org, "deal", p.id))
                want["kinds"].update((org, "deals", f) for f in p.custom_fields)
                if p.won:
                    want["integrations"].add((org,))
                    want["deal_projects"].add((org, p.id))
                    if p.account_id:
                        want["records"].add((org, "account", p.account_id))
                        deal_accounts.append((org, p.account_id))
            elif isinstance(p, identity.UserAccessChanged):
                want["users"].add((org, p.crm_user_id))
            elif isinstance(p, identity.CustomerMappingChanged):
                want["pairs"].add((org, p.portal_id, p.kind, p.crm_id))
            elif isinstance(p, pm.PmPortalUpserted):
                want["portals"].add((org, p.id))
            elif isinstance(p, (pm.PmProjectUpserted, pm.PmProjectDeleted)):
                want["projects"].add((org, p.portal_id, p.id))
            elif isinstance(p, (pm.PmClientCompanyUpserted, pm.PmClientCompanyDeleted)):
                want["companies"].add((org, p.portal_id, p.id))
            elif isinstance(p, (pm.PmClientUserUpserted, pm.PmClientUserRemoved)):
                want["client_users"].add((org, p.portal_id, p.id))
            elif isinstance(p, (pm.PmProjectGroupUpserted, pm.PmProjectGroupDeleted)):
                want["groups"].add((org, p.portal_id, p.id))
        # every table in one round trip (hub_platform.batch.LoadRound); the pairs of won deals' accounts on the org's
        # portal come from a join with the integration, whose portal the loads cannot know before
        first = LoadRound()
        missing: dict[str, list[Key]] = {}
        for name, keys in want.items():
            if todo := getattr(state, name).missing(keys):
                missing[name] = todo
                tables.query_rows(first, getattr(state, name).spec, todo)
        if deal_accounts:
            tables.query_account_pairs_of_integrations(first, deal_accounts)
        loaded = await first.fetch(conn)
        for name, todo in missing.items():
            table = getattr(state, name)
            table.take(todo, [tables.row_of(table.spec, r) for r in loaded[table.spec.table]])
        account_pairs = []
        for org, account_id in deal_accounts:  # the won deals' accounts' pairs, on their org's portal
            integ = state.integrations.rows.get((org,))
            if integ is not None and (key := (org, integ.portal_id, "account", account_id)) not in state.pairs.rows:
                account_pairs.append(key)
        if account_pairs:
            state.pairs.take(account_pairs, [tables.row_of(tables.PAIRS, r) for r in loaded["account_pairs"]])
        return state

    # --- what handlers ask ------------------------------------------------------------------------------

    async def integration(self, conn: asyncpg.Connection, org_id: str) -> rows.Integration | None:
        return await self.integrations.get(conn, (org_id,))

    async def note_kinds(self, conn: asyncpg.Connection, org_id: str, module: str, values: dict[str, Any]) -> None:
        """Merge the kinds of the custom field values seen into the stored ones (S6)."""
        keys = {f: (org_id, module, f) for f in values}
        await self.kinds.preload(conn, keys.values())
        for f, value in values.items():
            stored = self.kinds.rows[keys[f]]
            old = stored.value_kind if stored is not None else None
            new = domain.merge_kind(old, domain.value_kind(value))
            if new != old:
                self.kinds.put(rows.CustomField(org_id, module, f, new))

    async def claim_deal_project(self, conn: asyncpg.Connection, org_id: str, deal_id: str,
                                 pending: rows.PendingCommand) -> bool:
        """The deal's one project (S14): False when it already has one; else it and its pending command are kept."""
        if await self.deal_projects.get(conn, (org_id, deal_id)) is not None:
            return False
        self.deal_projects.put(rows.DealProject(org_id, deal_id, pending.command_id))
        self.new_pending.append(pending)
        return True

    async def set_pair(self, conn: asyncpg.Connection, pair: rows.Pair) -> None:
        """identity's pairing, unless a newer revision is stored."""
        key = tables.PAIRS.key_of(pair)
        current = await self.pairs.get(conn, key)
        if current is None or current.revision <= pair.revision:
            self.pairs.put(dataclasses.replace(pair, revision=max(pair.revision, current.revision if current else 0)))

    async def drop_pair(self, conn: asyncpg.Connection, key: Key, revision: int) -> None:
        current = await self.pairs.get(conn, key)
        if current is not None and current.revision <= revision:
            self.pairs.put(None, key)

    # --- the BatchState protocol -----------------------------------------------------------------------------

    async def flush(self, conn: asyncpg.Connection) -> None:
        for table in self._tables():
            await table.flush(conn)
        pending, self.new_pending = self.new_pending, []
        await tables.insert_pending(conn, pending)

    async def write_through(self, conn: asyncpg.Connection) -> None:
        """Write the changes and forget every cached row: the caller works on the database directly."""
        await self.flush(conn)
        for table in self._tables():
            table.forget()

    def snapshot(self) -> Any:
        return [t.snapshot() for t in self._tables()], list(self.new_pending)

    def restore(self, snapshot: Any) -> None:
        snaps, pending = snapshot
        for table, snap in zip(self._tables(), snaps, strict=True):
            table.restore(snap)
        self.new_pending = list(pending)

