"""Contacts <-> client users (S13), created all together or not at all when e-mails collide (S19)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from hub_identity import domain
from hub_identity.handlers.common import on, publish_mapping, send_command, state_of, unlink
from hub_identity.rows import Contact
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, pm
from hub_schema.names import normalise_email

log = get_logger(__name__)
router = Router()


async def create_client_users(ctx: HandlerContext, org: str, portal_id: str, company_id: str,
                              contacts: Sequence[Contact]) -> None:
    """Pair or create client users for unpaired contacts, all or nothing when e-mails collide (S19)."""
    st = state_of(ctx)
    with_email = [c for c in contacts if c.email_norm is not None]
    mapped = await st.mappings_of(org, portal_id, "contact", [c.id for c in with_email])
    unpaired = [c for c in with_email if mapped[c.id] is None]
    if not unpaired:
        return
    holders = await st.client_users_with_emails(org, portal_id, [c.email_norm for c in unpaired])  # type: ignore[misc]
    in_company = {e: [u for u in users if u.client_company_id == company_id] for e, users in holders.items()}
    await st.mappings_by_pm(org, portal_id, "contact", [u.id for users in in_company.values() for u in users])
    to_create: list[Contact] = []
    for contact in unpaired:
        same = [u for u in in_company[contact.email_norm]  # type: ignore[index]
                if not st.mappings.find("pm", (org, portal_id, "contact", u.id))]
        if same:  # already there in the PM tool: pair, do not create twice
            await publish_mapping(ctx, org, portal_id, "contact", contact.id, same[0].id, "linked")
        else:
            to_create.append(contact)
    if not to_create:
        return
    emails = [c.email_norm for c in to_create]
    taken = {e: users[0].id for e, users in (await st.client_users_with_emails(org, portal_id, emails)).items()  # type: ignore[arg-type]
             if users}
    claimed = await st.pending_contacts_with_emails(org, portal_id, emails)  # type: ignore[arg-type]
    candidates = [domain.Candidate(c.id, c.name or c.id, c.email or "") for c in to_create]
    duplicates = domain.find_duplicate_emails(candidates, {**taken, **claimed})
    if duplicates:
        log.warning("contacts not synced as client users: duplicate e-mails",
                    contacts=[list(d.record_ids) for d in duplicates])
        return
    for contact in to_create:
        command = cmd.PmClientUserCreate(command_id=uuid.uuid4(), portal_id=portal_id, client_company_id=company_id,
                                         email=contact.email, name=contact.name,  # type: ignore[arg-type]
                                         crm_record_type="contact", crm_record_id=contact.id)
        await send_command(ctx, org, command, f"client_user:{org}:{contact.id}", "contact", contact.id)
        await publish_mapping(ctx, org, portal_id, "contact", contact.id, None, "pending", command.command_id)


async def sync_account_contacts(ctx: HandlerContext, org: str, portal_id: str, account_id: str) -> None:
    st = state_of(ctx)
    mapping = await st.mapping(org, portal_id, "account", account_id)
    if mapping is None or mapping.state != "linked" or mapping.pm_id is None:
        return
    await create_client_users(ctx, org, portal_id, mapping.pm_id, await st.contacts_of_account(org, account_id))


@on(router, crm.CrmContactUpserted)
async def on_contact(ctx: HandlerContext, event: Event[crm.CrmContactUpserted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    name = domain.contact_name(p.first_name, p.last_name)
    contact = await st.apply(st.contacts, p.version, org_id=org, id=p.id, account_id=p.account_id, name=name,
                             email=p.email, email_norm=normalise_email(p.email), deleted=False)
    if contact is None:
        return
    portal_id = await st.portal_of(org)
    if portal_id is None:
        return
    mapping = await st.mapping(org, portal_id, "contact", p.id)
    account_mapping = await st.mapping(org, portal_id, "account", p.account_id) if p.account_id else None
    company_id = account_mapping.pm_id if account_mapping and account_mapping.state == "linked" else None
    if mapping is None:
        if company_id is not None:
            await create_client_users(ctx, org, portal_id, company_id, [contact])
        return
    if mapping.state != "linked" or mapping.pm_id is None:
        return
    client_user = await st.client_user(org, portal_id, mapping.pm_id)
    if client_user is None or client_user.deleted:
        return
    changes: dict[str, Any] = {}
    if p.email is not None and normalise_email(p.email) != client_user.email_norm:
        changes["email"] = p.email
    if name != client_user.name:
        changes["name"] = name
    if company_id is not None and company_id != client_user.client_company_id:
        changes["client_company_id"] = company_id  # one contact, one client company: move it
    if changes:
        await send_command(ctx, org, cmd.PmClientUserUpdate(
            command_id=uuid.uuid4(), portal_id=portal_id, client_user_id=mapping.pm_id, **changes,
        ), f"client_user:{org}:{p.id}", "contact", p.id)


@on(router, crm.CrmContactDeleted)
async def on_contact_deleted(ctx: HandlerContext, event: Event[crm.CrmContactDeleted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.contacts, p.version, org_id=org, id=p.id, deleted=True) is not None:
        await unlink(ctx, org, "contact", crm_id=p.id)


@on(router, pm.PmClientUserUpserted)
async def on_client_user(ctx: HandlerContext, event: Event[pm.PmClientUserUpserted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    email_norm = normalise_email(p.email)
    if await st.apply(st.client_users, p.version, org_id=org, portal_id=p.portal_id, id=p.id, email=p.email,
                      email_norm=email_norm, name=p.name, client_company_id=p.client_company_id,
                      deleted=False) is None:
        return
    pending = await st.take_pending(org, p.command_id)
    if await st.portal_of(org) != p.portal_id:
        return
    if pending is not None and pending.command_type == "pm.client_user.create":
        if pending.subject_kind == "contact":
            await publish_mapping(ctx, org, p.portal_id, "contact", pending.subject_id, p.id, "linked")
        return
    if await st.mapping_by_pm(org, p.portal_id, "contact", p.id) is not None:
        return  # already paired; PM-side edits have no CRM command to go to
    account = await st.mapping_by_pm(org, p.portal_id, "account", p.client_company_id)
    if account is None or account.state != "linked":
        return
    same_email = [c for c in await st.contacts_of_account(org, account.crm_id) if c.email_norm == email_norm]
    mapped = await st.mappings_of(org, p.portal_id, "contact", [c.id for c in same_email])
    candidates = [c for c in same_email if mapped[c.id] is None]
    if len(candidates) == 1:
        await publish_mapping(ctx, org, p.portal_id, "contact", candidates[0].id, p.id, "linked")


@on(router, pm.PmClientUserRemoved)
async def on_client_user_removed(ctx: HandlerContext, event: Event[pm.PmClientUserRemoved]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.client_users, p.version, org_id=org, portal_id=p.portal_id, id=p.id,
                      deleted=True) is not None:
        if await st.portal_of(org) == p.portal_id:
            await unlink(ctx, org, "contact", pm_id=p.id, portal_id=p.portal_id)
