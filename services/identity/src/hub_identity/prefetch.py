"""What a batch's events will look at, read before its handlers run: one query per table and look-up, in rounds.

Round one needs only the events (the records they name, their orgs, the commands their echoes answer); round
two what round one found (the org's portal, a user's current portal user, the mapping of a command's
subject); round three the PM records those mappings hold. Anything a handler still needs after that (the
cold paths: enable, matching, imports, profile changes) is read on first use, once per batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hub_identity import storage
from hub_identity.rows import name_norm
from hub_identity.state import IdentityState
from hub_identity.table import Key, Table
from hub_platform.batch import LoadRound
from hub_schema import Event
from hub_schema.events import crm, pm
from hub_schema.names import normalise_email

CREATES = ("pm.client_company.create", "pm.client_user.create")


class Wants:
    """Keys and index values to read, gathered over the batch, then read with one query each."""

    def __init__(self, state: IdentityState) -> None:
        self.state = state
        self.keys: dict[Table[Any], set[Key]] = defaultdict(set)
        self.values: dict[tuple[Table[Any], str], set[Key]] = defaultdict(set)

    def key(self, table: Table[Any], *key: Any) -> None:
        if None not in key:
            self.keys[table].add(key)

    def value(self, table: Table[Any], index: str, *value: Any) -> None:
        if None not in value:
            self.values[(table, index)].add(value)

    async def read(self) -> None:
        """Every key and index value gathered, in one round trip (hub_platform.batch.LoadRound); taken in the order
        the reads were one per table before: keys first, then index values (a row known keeps its first copy)."""
        r = LoadRound()
        taken: list[tuple[str, Table[Any], list[Key], tuple[str, list[Key]] | None]] = []
        for table, keys in self.keys.items():
            if missing := table.missing(keys):
                name = f"load_{len(taken)}"
                storage.query_rows(r, name, table.name, table.row_type, table.key_columns, missing, lock=table.lock)
                taken.append((name, table, missing, None))
        for (table, index), values in self.values.items():
            if todo := sorted({v for v in values if None not in v and (index, v) not in table.complete}):
                name = f"load_{len(taken)}"
                storage.query_rows(r, name, table.name, table.row_type, table.indexes[index].columns, todo, lock=table.lock)
                taken.append((name, table, [], (index, todo)))
        loaded = await r.fetch(self.state.conn)
        for name, table, keys, complete in taken:
            table.loaded(keys, storage.rows_of(table.row_type, loaded[name]))
            if complete is not None:
                table.complete.update((complete[0], v) for v in complete[1])


async def prefetch(st: IdentityState, events: Sequence[Event[Any]]) -> None:
    first = Wants(st)
    orgs = {e.org_id for e in events}
    for org in orgs:
        first.key(st.orgs, org)
    for e in events:
        p, org = e.payload, e.org_id
        if getattr(p, "command_id", None) is not None and isinstance(p, (pm.PmPortalUserUpserted, pm.PmClientCompanyUpserted,
                                                                         pm.PmClientUserUpserted, pm.PmCommandRejected)):
            first.key(st.pending, p.command_id)
        if isinstance(p, (crm.CrmUserUpserted, crm.CrmUserDeactivated)):
            first.key(st.crm_users, org, p.id)
        elif isinstance(p, pm.PmPortalUserUpserted | pm.PmPortalUserRemoved):
            first.key(st.portal_users, org, p.portal_id, p.id)
            first.value(st.crm_users, "portal_user", org, p.id)
            if isinstance(p, pm.PmPortalUserUpserted):
                first.value(st.crm_users, "email", org, normalise_email(p.email))
        elif isinstance(p, crm.CrmAccountUpserted | crm.CrmAccountDeleted):
            first.key(st.accounts, org, p.id)
        elif isinstance(p, crm.CrmContactUpserted | crm.CrmContactDeleted):
            first.key(st.contacts, org, p.id)
        elif isinstance(p, pm.PmClientCompanyUpserted | pm.PmClientCompanyDeleted):
            first.key(st.client_companies, org, p.portal_id, p.id)
            if isinstance(p, pm.PmClientCompanyUpserted):
                first.value(st.accounts, "name", org, name_norm(p.name) or None)
        elif isinstance(p, pm.PmClientUserUpserted | pm.PmClientUserRemoved):
            first.key(st.client_users, org, p.portal_id, p.id)
    await first.read()
    if any(isinstance(e.payload, crm.CrmUserUpserted | crm.CrmUserDeactivated | pm.PmPortalUserUpserted
                      | pm.PmPortalUserRemoved) for e in events):
        await st.need_profiles(orgs)  # every access event states the org's profile

    second = Wants(st)
    portal = {org: (o.portal if (o := st.orgs.get((org,))) else None) for org in orgs}
    for e in events:
        p, org = e.payload, e.org_id
        portal_id = portal[org]
        if portal_id is None:
            continue
        command_id = getattr(p, "command_id", None)
        pending = st.pending.get((command_id,)) if (command_id,) in st.pending.known else None
        if pending is not None and pending.command_type in CREATES:
            second.key(st.mappings, org, portal_id, pending.subject_kind, pending.subject_id)
        if isinstance(p, crm.CrmUserUpserted):
            second.value(st.portal_users, "email", org, portal_id, normalise_email(p.email))
            if (user := st.crm_users.get((org, p.id))) is not None:
                second.key(st.portal_users, org, user.portal_id, user.portal_user_id)
        elif isinstance(p, crm.CrmUserDeactivated):
            if (user := st.crm_users.get((org, p.id))) is not None:
                second.key(st.portal_users, org, user.portal_id, user.portal_user_id)
                second.value(st.portal_users, "email", org, portal_id, user.email_norm)
        elif isinstance(p, pm.PmPortalUserUpserted | pm.PmPortalUserRemoved):
            for user in st.crm_users.find("portal_user", (org, p.id)):
                second.value(st.portal_users, "email", org, portal_id, user.email_norm)
            if isinstance(p, pm.PmPortalUserUpserted) and (email := normalise_email(p.email)) is not None:
                for user in st.crm_users.find("email", (org, email)):
                    second.value(st.portal_users, "email", org, portal_id, user.email_norm)
        elif isinstance(p, crm.CrmAccountUpserted | crm.CrmAccountDeleted):
            second.key(st.mappings, org, portal_id, "account", p.id)
            if isinstance(p, crm.CrmAccountUpserted):
                second.value(st.client_companies, "name", org, portal_id, name_norm(p.name) or None)
        elif isinstance(p, crm.CrmContactUpserted | crm.CrmContactDeleted):
            second.key(st.mappings, org, portal_id, "contact", p.id)
            if isinstance(p, crm.CrmContactUpserted):
                second.key(st.mappings, org, portal_id, "account", p.account_id)
        elif isinstance(p, pm.PmClientCompanyUpserted | pm.PmClientCompanyDeleted):
            second.value(st.mappings, "pm", org, portal_id, "account", p.id)
            if isinstance(p, pm.PmClientCompanyUpserted) and (norm := name_norm(p.name)):
                for account in st.accounts.find("name", (org, norm)):
                    second.key(st.mappings, org, portal_id, "account", account.id)
        elif isinstance(p, pm.PmClientUserUpserted | pm.PmClientUserRemoved):
            second.value(st.mappings, "pm", org, portal_id, "contact", p.id)
            if isinstance(p, pm.PmClientUserUpserted):
                second.value(st.mappings, "pm", org, portal_id, "account", p.client_company_id)
    await second.read()

    third = Wants(st)
    for e in events:
        p, org = e.payload, e.org_id
        portal_id = portal[org]
        if portal_id is None:
            continue
        if isinstance(p, crm.CrmAccountUpserted):
            mapping = st.mappings.get((org, portal_id, "account", p.id))
            if mapping is not None and mapping.state == "linked":
                third.key(st.client_companies, org, portal_id, mapping.pm_id)
            elif (norm := name_norm(p.name)):
                for company in st.client_companies.find("name", (org, portal_id, norm)):
                    third.value(st.mappings, "pm", org, portal_id, "account", company.id)
        elif isinstance(p, crm.CrmContactUpserted):
            mapping = st.mappings.get((org, portal_id, "contact", p.id))
            if mapping is not None and mapping.state == "linked":
                third.key(st.client_users, org, portal_id, mapping.pm_id)
        elif isinstance(p, pm.PmClientCompanyUpserted) and p.portal_id == portal_id:
            pending = st.pending.get((p.command_id,)) if (p.command_id,) in st.pending.known else None
            if pending is not None and pending.command_type == "pm.client_company.create":
                third.value(st.contacts, "account", org, pending.subject_id)
    await third.read()

    # the contacts that may become client users (S19 all-or-nothing): their pairs, and who holds their e-mails
    contacts: dict[tuple[str, str], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for e in events:
        p, org = e.payload, e.org_id
        portal_id = portal[org]
        if portal_id is None:
            continue
        ids, emails = contacts[(org, portal_id)]
        if isinstance(p, crm.CrmContactUpserted) and (email := normalise_email(p.email)) is not None:
            ids.add(p.id)
            emails.add(email)
        elif isinstance(p, pm.PmClientCompanyUpserted) and p.portal_id == portal_id:
            pending = st.pending.get((p.command_id,)) if (p.command_id,) in st.pending.known else None
            if pending is not None and pending.command_type == "pm.client_company.create":
                for contact in st.contacts.find("account", (org, pending.subject_id)):
                    ids.add(contact.id)
                    if contact.email_norm is not None:
                        emails.add(contact.email_norm)
    for (org, portal_id), (ids, emails) in contacts.items():
        if ids:
            await st.mappings_of(org, portal_id, "contact", ids)
            holders = await st.client_users_with_emails(org, portal_id, emails)
            await st.mappings_by_pm(org, portal_id, "contact", [u.id for users in holders.values() for u in users])
            await st.pending_contacts_with_emails(org, portal_id, emails)
