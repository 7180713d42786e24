"""Identity's batch state: every row its handlers need, loaded set-based, changed in memory, flushed in bulk.

`IdentityState.load` (the router's state loader) reads, for all the batch's events at once, the rows their
handlers will look at: one query per table and kind of look-up (`storage.load_rows`), in a few rounds
(a user's portal is needed before its portal users by e-mail can be asked for). Handlers then read and
change typed rows (`hub_identity.rows`) through the look-ups below; a row nobody could know up front (a
contact's account mapping, the accounts of an org when matching completes) is read on first use, once per
batch. `flush` writes what changed: one pipelined upsert per table, one DELETE for settled commands.

Rows are read `FOR UPDATE` (storage), so two replicas touching the same rows in parallel batches run one
after the other and the rows written back are never older than what the database holds. Not the org's row:
every batch reads it, and only `linking.integration.changed` and the matching result (one key) change it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import asyncpg

from hub_identity import storage
from hub_identity.domain import ProfileVersion
from hub_identity.rows import (
    Account,
    ClientCompany,
    ClientUser,
    Contact,
    CrmUser,
    Mapping,
    Org,
    PendingCommand,
    PortalUser,
    name_norm,
)
from hub_identity.table import Index, Key, Table
from hub_schema import Event

R = TypeVar("R")


def _live(row: Any) -> bool:
    return not row.deleted


class IdentityState:
    names_normalised: ClassVar[bool] = False
    """Set once this process found no row written before `name_norm` existed (see `_normalise_old_names`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.orgs = Table("orgs", Org, lock=False)  # every batch reads it; only the org's integration key writes it
        self.crm_users = Table("crm_users", CrmUser, email=Index(("org_id", "email_norm")),
                               portal_user=Index(("org_id", "portal_user_id")), org=Index(("org_id",)))
        self.portal_users = Table("portal_users", PortalUser, email=Index(("org_id", "portal_id", "email_norm"), _live))
        self.accounts = Table("accounts", Account, name=Index(("org_id", "name_norm"), _live), org=Index(("org_id",)))
        self.contacts = Table("contacts", Contact, account=Index(("org_id", "account_id"), _live),
                              email=Index(("org_id", "email_norm")))
        self.client_companies = Table("client_companies", ClientCompany,
                                      name=Index(("org_id", "portal_id", "name_norm"), _live))
        self.client_users = Table("client_users", ClientUser, email=Index(("org_id", "portal_id", "email_norm"), _live))
        self.mappings = Table("customer_mappings", Mapping, pm=Index(("org_id", "portal_id", "kind", "pm_id"),
                                                                     lambda m: m.state != "unlinked"))
        self.pending = Table("pending_commands", PendingCommand,
                             subject=Index(("org_id", "command_type", "subject_id")))
        self.tables: list[Table[Any]] = [self.orgs, self.crm_users, self.portal_users, self.accounts, self.contacts,
                                         self.client_companies, self.client_users, self.mappings, self.pending]
        self.profiles: dict[str, ProfileVersion | None] = {}

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    async def load(cls, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> IdentityState:
        """The state of every key the batch's events touch (the router's `state` loader)."""
        from hub_identity.prefetch import prefetch

        state = cls(conn)
        if not cls.names_normalised:
            await state._normalise_old_names()
        await prefetch(state, events)
        return state

    async def need(self, table: Table[R], keys: Iterable[Key]) -> None:
        """Make these keys known (one query for all that are not yet)."""
        missing = table.missing(keys)
        if missing:
            table.loaded(missing, await storage.load_rows(self.conn, table.name, table.row_type, table.key_columns, missing,
                                                          lock=table.lock))

    async def need_index(self, table: Table[R], index: str, values: Iterable[Key]) -> None:
        """Make these index values complete: every row of the database filed under one of them is known."""
        todo = sorted({v for v in values if None not in v and (index, v) not in table.complete})
        if todo:
            columns = table.indexes[index].columns
            table.loaded((), await storage.load_rows(self.conn, table.name, table.row_type, columns, todo, lock=table.lock))
            table.complete.update((index, v) for v in todo)

    async def need_profiles(self, org_ids: Iterable[str]) -> None:
        todo = sorted({o for o in org_ids if o not in self.profiles})
        if todo:
            found = await storage.latest_profiles(self.conn, todo)
            self.profiles.update({o: found.get(o) for o in todo})

    async def _normalise_old_names(self) -> None:
        """Accounts and client companies stored before `name_norm` existed get it here (the normaliser is
        Python, the migration could not compute it); once none is left this process stops asking."""
        found = False
        for table in (self.accounts, self.client_companies):
            for row in table.loaded((), await storage.unnormalised_names(self.conn, table.name, table.row_type)):
                table.put(dataclasses.replace(row, name_norm=name_norm(row.name)))
                found = True
        if not found:
            type(self).names_normalised = True

    # -- look-ups (each reads the database at most once per key or value and batch) ----------------

    async def org(self, org_id: str) -> Org | None:
        await self.need(self.orgs, [(org_id,)])
        return self.orgs.get((org_id,))

    async def portal_of(self, org_id: str) -> str | None:
        org = await self.org(org_id)
        return org.portal if org else None

    async def crm_user(self, org_id: str, crm_user_id: str) -> CrmUser | None:
        await self.need(self.crm_users, [(org_id, crm_user_id)])
        return self.crm_users.get((org_id, crm_user_id))

    async def crm_users_of_org(self, org_id: str) -> list[CrmUser]:
        await self.need_index(self.crm_users, "org", [(org_id,)])
        return self.crm_users.find("org", (org_id,))

    async def crm_users_touching(self, org_id: str, portal_user_id: str, email_norm: str | None) -> list[CrmUser]:
        """CRM users paired with this portal user or with its e-mail (a change of it may re-pair them)."""
        await self.need_index(self.crm_users, "portal_user", [(org_id, portal_user_id)])
        found = {u.crm_user_id: u for u in self.crm_users.find("portal_user", (org_id, portal_user_id))}
        if email_norm is not None:
            await self.need_index(self.crm_users, "email", [(org_id, email_norm)])
            found.update({u.crm_user_id: u for u in self.crm_users.find("email", (org_id, email_norm))})
        return [found[k] for k in sorted(found)]

    async def portal_user(self, org_id: str, portal_id: str, user_id: str) -> PortalUser | None:
        await self.need(self.portal_users, [(org_id, portal_id, user_id)])
        return self.portal_users.get((org_id, portal_id, user_id))

    async def portal_users_with_emails(self, org_id: str, portal_id: str, emails: Iterable[str]) -> None:
        await self.need_index(self.portal_users, "email", [(org_id, portal_id, e) for e in emails])

    def portal_user_with_email(self, org_id: str, portal_id: str, email_norm: str) -> PortalUser | None:
        """The live portal user with this e-mail, active ones first (after `portal_users_with_emails`)."""
        found = self.portal_users.find("email", (org_id, portal_id, email_norm))
        return min(found, key=lambda u: (not u.active, u.id)) if found else None

    async def account(self, org_id: str, account_id: str) -> Account | None:
        await self.need(self.accounts, [(org_id, account_id)])
        return self.accounts.get((org_id, account_id))

    async def contact(self, org_id: str, contact_id: str) -> Contact | None:
        await self.need(self.contacts, [(org_id, contact_id)])
        return self.contacts.get((org_id, contact_id))

    async def contacts_of_account(self, org_id: str, account_id: str) -> list[Contact]:
        await self.need_index(self.contacts, "account", [(org_id, account_id)])
        return self.contacts.find("account", (org_id, account_id))

    async def client_company(self, org_id: str, portal_id: str, company_id: str) -> ClientCompany | None:
        await self.need(self.client_companies, [(org_id, portal_id, company_id)])
        return self.client_companies.get((org_id, portal_id, company_id))

    async def client_user(self, org_id: str, portal_id: str, user_id: str) -> ClientUser | None:
        await self.need(self.client_users, [(org_id, portal_id, user_id)])
        return self.client_users.get((org_id, portal_id, user_id))

    async def client_users_with_emails(self, org_id: str, portal_id: str, emails: Iterable[str]) -> dict[str, list[ClientUser]]:
        """Live client users of the portal holding each of these e-mails."""
        values = [(org_id, portal_id, e) for e in set(emails)]
        await self.need_index(self.client_users, "email", values)
        return {v[2]: self.client_users.find("email", v) for v in values}

    async def mapping(self, org_id: str, portal_id: str, kind: str, crm_id: str) -> Mapping | None:
        await self.need(self.mappings, [(org_id, portal_id, kind, crm_id)])
        return self.mappings.get((org_id, portal_id, kind, crm_id))

    async def mappings_of(self, org_id: str, portal_id: str, kind: str, crm_ids: Iterable[str]) -> dict[str, Mapping | None]:
        keys = [(org_id, portal_id, kind, i) for i in crm_ids]
        await self.need(self.mappings, keys)
        return {k[3]: self.mappings.get(k) for k in keys}

    async def mapping_by_pm(self, org_id: str, portal_id: str, kind: str, pm_id: str) -> Mapping | None:
        """The live (not unlinked) mapping holding this PM record."""
        found = await self.mappings_by_pm(org_id, portal_id, kind, [pm_id])
        return found[pm_id]

    async def mappings_by_pm(self, org_id: str, portal_id: str, kind: str, pm_ids: Iterable[str]) -> dict[str, Mapping | None]:
        values = [(org_id, portal_id, kind, i) for i in pm_ids]
        await self.need_index(self.mappings, "pm", values)
        return {v[3]: next(iter(self.mappings.find("pm", v)), None) for v in values}

    async def unmapped_companies_named(self, org_id: str, portal_id: str, name: str | None) -> list[ClientCompany]:
        """Live client companies of the portal with this name (normalised) that no account holds."""
        norm = name_norm(name)
        if not norm:
            return []
        await self.need_index(self.client_companies, "name", [(org_id, portal_id, norm)])
        same = self.client_companies.find("name", (org_id, portal_id, norm))
        held = await self.mappings_by_pm(org_id, portal_id, "account", [c.id for c in same])
        return [c for c in same if held[c.id] is None]

    async def unmapped_accounts_named(self, org_id: str, portal_id: str, name: str | None) -> list[Account]:
        """Live accounts with this name (normalised) with no mapping row at all in the portal."""
        norm = name_norm(name)
        if not norm:
            return []
        await self.need_index(self.accounts, "name", [(org_id, norm)])
        same = self.accounts.find("name", (org_id, norm))
        mapped = await self.mappings_of(org_id, portal_id, "account", [a.id for a in same])
        return [a for a in same if mapped[a.id] is None]

    async def unmapped_accounts(self, org_id: str, portal_id: str) -> list[Account]:
        """Live, named accounts with no mapping row at all in the portal (an `unlinked` row was unlinked on purpose)."""
        await self.need_index(self.accounts, "org", [(org_id,)])
        live = [a for a in self.accounts.find("org", (org_id,)) if not a.deleted and a.name is not None]
        mapped = await self.mappings_of(org_id, portal_id, "account", [a.id for a in live])
        return [a for a in live if mapped[a.id] is None]

    async def pending_contacts_with_emails(self, org_id: str, portal_id: str, emails: Iterable[str]) -> dict[str, str]:
        """E-mail -> contact id of contacts whose client user is being created (claimed, S19)."""
        values = [(org_id, e) for e in set(emails)]
        await self.need_index(self.contacts, "email", values)
        contacts = [c for v in values for c in self.contacts.find("email", v)]
        mappings = await self.mappings_of(org_id, portal_id, "contact", [c.id for c in contacts])
        return {c.email_norm: c.id for c in contacts  # type: ignore[misc]
                if (m := mappings[c.id]) is not None and m.state == "pending"}

    async def pending_command(self, command_id: uuid.UUID) -> PendingCommand | None:
        await self.need(self.pending, [(command_id,)])
        return self.pending.get((command_id,))

    async def pending_for(self, org_id: str, command_type: str, subject_ids: Iterable[str]) -> set[str]:
        """Which of these subjects have a command of this type in flight."""
        values = [(org_id, command_type, s) for s in subject_ids]
        await self.need_index(self.pending, "subject", values)
        return {v[2] for v in values if self.pending.find("subject", v)}

    async def latest_profile(self, org_id: str) -> ProfileVersion | None:
        await self.need_profiles([org_id])
        return self.profiles[org_id]

    # -- changes ------------------------------------------------------------------------------------

    async def apply(self, table: Table[R], version: int, **values: Any) -> R | None:
        """An upstream record at `version`: stored (merged into the row kept) if newer, else None (stale)."""
        key = tuple(values[c] for c in table.key_columns)
        await self.need(table, [key])
        old = table.get(key)
        if old is not None and old.version >= version:  # type: ignore[attr-defined]
            return None
        row = dataclasses.replace(old, version=version, **values) if old is not None else table.row_type(version=version, **values)
        return table.put(row)

    def save_mapping(self, org_id: str, portal_id: str, kind: str, crm_id: str, pm_id: str | None, state: str,
                     pending_command_id: uuid.UUID | None = None) -> Mapping:
        """Insert or change a (loaded) mapping; its revision counts the changes."""
        old = self.mappings.get((org_id, portal_id, kind, crm_id))
        return self.mappings.put(Mapping(org_id, portal_id, kind, crm_id, pm_id, state, pending_command_id,
                                         old.revision + 1 if old else 1))

    def next_access_revision(self, user: CrmUser) -> int:
        return self.crm_users.put(dataclasses.replace(user, access_revision=user.access_revision + 1)).access_revision

    def add_pending(self, command: PendingCommand) -> None:
        self.pending.put(command)

    async def take_pending(self, org_id: str, command_id: uuid.UUID | None) -> PendingCommand | None:
        """The pending command an echo answers, removed; only `org_id`'s (an echo naming another org's command finds nothing)."""
        if command_id is None:
            return None
        pending = await self.pending_command(command_id)
        if pending is None or pending.org_id != org_id:
            return None
        self.pending.delete((command_id,))
        return pending

    def new_profile(self, org_id: str, profile: ProfileVersion) -> None:
        self.profiles[org_id] = profile

    # -- BatchState -------------------------------------------------------------------------------

    async def flush(self, conn: asyncpg.Connection) -> None:
        for table in self.tables:
            rows, gone = table.take_writes()
            if table is self.mappings:  # free PM records before they are taken again (the unique index)
                rows.sort(key=lambda m: m.pairs_pm is not None)
            await storage.upsert(conn, table.name, rows, table.key_columns)
            await storage.delete_rows(conn, table.name, table.key_columns, gone)

    def snapshot(self) -> Any:
        return [t.snapshot() for t in self.tables], dict(self.profiles)

    def restore(self, snapshot: Any) -> None:
        tables, profiles = snapshot
        for table, snap in zip(self.tables, tables):
            table.restore(snap)
        self.profiles = dict(profiles)
