"""Accounts <-> client companies (S13, with linking's matching result S21/S22): see the package doc."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from hub_identity.handlers.common import on, publish_mapping, send_command, state_of, unlink
from hub_identity.handlers.contacts import sync_account_contacts
from hub_identity.rows import name_norm
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, pm

log = get_logger(__name__)
router = Router()


async def sync_new_account(ctx: HandlerContext, org: str, portal_id: str, account_id: str, name: str | None,
                           not_by_name: Collection[str] = ()) -> None:
    """An account with no mapping: pair it with the unique unpaired company of its name, else create one (S13).

    `not_by_name`: client companies that must not be paired by name (linking found them ambiguous);
    an account named like one of them waits instead of getting a second company of that name.
    """
    same_name = await state_of(ctx).unmapped_companies_named(org, portal_id, name)
    matches = [c for c in same_name if c.id not in not_by_name]
    if len(matches) == 1:
        await publish_mapping(ctx, org, portal_id, "account", account_id, matches[0].id, "linked")
        await sync_account_contacts(ctx, org, portal_id, account_id)
        return
    if len(same_name) > len(matches):
        log.info("account named like an ambiguous client waits", account_id=account_id)
        return
    command = cmd.PmClientCompanyCreate(command_id=uuid.uuid4(), portal_id=portal_id, name=name,  # type: ignore[arg-type]
                                        crm_account_id=account_id)
    await send_command(ctx, org, command, f"client_company:{org}:{account_id}", "account", account_id)
    await publish_mapping(ctx, org, portal_id, "account", account_id, None, "pending", command.command_id)


async def sync_unmapped_accounts(ctx: HandlerContext, org: str, portal_id: str,
                                 not_by_name: Collection[str] = ()) -> None:
    """Every live account with no mapping row yet goes the way of a new account (existed before the enable)."""
    st = state_of(ctx)
    accounts = await st.unmapped_accounts(org, portal_id)
    # what the loop looks at, read at once: the companies of every name, who holds them, the accounts' contacts
    names = {(org, portal_id, n) for a in accounts if (n := name_norm(a.name))}
    await st.need_index(st.client_companies, "name", names)
    await st.mappings_by_pm(org, portal_id, "account",
                            [c.id for v in names for c in st.client_companies.find("name", v)])
    await st.need_index(st.contacts, "account", [(org, a.id) for a in accounts])
    for account in accounts:
        await sync_new_account(ctx, org, portal_id, account.id, account.name, not_by_name)


async def adopt_matched_pairs(ctx: HandlerContext, org: str, portal_id: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Linking matched these accounts with these client companies (S21/S22): identity pairs them the same way."""
    st = state_of(ctx)
    await st.mappings_of(org, portal_id, "account", [a for a, _ in pairs])
    await st.mappings_by_pm(org, portal_id, "account", [c for _, c in pairs])
    await st.need_index(st.contacts, "account", [(org, a) for a, _ in pairs])
    for account_id, company_id in pairs:
        await adopt_matched_pair(ctx, org, portal_id, account_id, company_id)


async def adopt_matched_pair(ctx: HandlerContext, org: str, portal_id: str, account_id: str, company_id: str) -> None:
    st = state_of(ctx)
    mapping = await st.mapping(org, portal_id, "account", account_id)
    if mapping is not None and mapping.state == "linked":
        if mapping.pm_id != company_id:
            log.warning("matched account already paired with another client company; kept",
                        account_id=account_id, paired=mapping.pm_id, matched=company_id)
            return
    else:
        other = await st.mapping_by_pm(org, portal_id, "account", company_id)
        if other is not None and other.crm_id != account_id:
            log.warning("matched client company already paired with another account; kept",
                        client_company_id=company_id, paired=other.crm_id, matched=account_id)
            return
        if mapping is not None and mapping.state == "pending":
            log.warning("matching paired an account whose client company was being created; the match wins",
                        account_id=account_id, client_company_id=company_id)
        await publish_mapping(ctx, org, portal_id, "account", account_id, company_id, "linked")
    await sync_account_contacts(ctx, org, portal_id, account_id)


@on(router, crm.CrmAccountUpserted)
async def on_account(ctx: HandlerContext, event: Event[crm.CrmAccountUpserted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.accounts, p.version, org_id=org, id=p.id, name=p.name, name_norm=name_norm(p.name),
                      deleted=False) is None:
        return
    org_row = await st.org(org)
    portal_id = org_row.portal if org_row else None
    if org_row is None or portal_id is None:
        return
    mapping = await st.mapping(org, portal_id, "account", p.id)
    if mapping is None:
        if org_row.matching_pending:
            log.info("account waits for the matching result", account_id=p.id)
            return
        await sync_new_account(ctx, org, portal_id, p.id, p.name)
    elif mapping.state == "linked" and mapping.pm_id is not None:
        company = await st.client_company(org, portal_id, mapping.pm_id)
        if company is not None and not company.deleted and company.name != p.name:
            await send_command(ctx, org, cmd.PmClientCompanyUpdate(
                command_id=uuid.uuid4(), portal_id=portal_id, client_company_id=mapping.pm_id, name=p.name,
            ), f"client_company:{org}:{p.id}", "account", p.id)


@on(router, crm.CrmAccountDeleted)
async def on_account_deleted(ctx: HandlerContext, event: Event[crm.CrmAccountDeleted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.accounts, p.version, org_id=org, id=p.id, deleted=True) is not None:
        await unlink(ctx, org, "account", crm_id=p.id)


@on(router, pm.PmClientCompanyUpserted)
async def on_client_company(ctx: HandlerContext, event: Event[pm.PmClientCompanyUpserted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.client_companies, p.version, org_id=org, portal_id=p.portal_id, id=p.id, name=p.name,
                      name_norm=name_norm(p.name), deleted=False) is None:
        return
    pending = await st.take_pending(org, p.command_id)
    org_row = await st.org(org)
    if org_row is None or org_row.portal != p.portal_id:
        return
    if pending is not None and pending.command_type == "pm.client_company.create":
        account_id = pending.subject_id
        mapping = await st.mapping(org, p.portal_id, "account", account_id)
        if mapping is not None and mapping.state == "linked" and mapping.pm_id != p.id:
            log.warning("created client company not paired: its account was paired meanwhile (matching)",
                        account_id=account_id, client_company_id=p.id, paired=mapping.pm_id)
            return
    elif await st.mapping_by_pm(org, p.portal_id, "account", p.id) is not None:
        return  # already paired; the PM side's rename has no CRM command to go to
    elif org_row.matching_pending:
        return  # linking's matching decides, identity adopts its result
    else:
        accounts = await st.unmapped_accounts_named(org, p.portal_id, p.name)
        if len(accounts) != 1:
            return
        account_id = accounts[0].id
    await publish_mapping(ctx, org, p.portal_id, "account", account_id, p.id, "linked")
    await sync_account_contacts(ctx, org, p.portal_id, account_id)


@on(router, pm.PmClientCompanyDeleted)
async def on_client_company_deleted(ctx: HandlerContext, event: Event[pm.PmClientCompanyDeleted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.client_companies, p.version, org_id=org, portal_id=p.portal_id, id=p.id,
                      deleted=True) is not None:
        if await st.portal_of(org) == p.portal_id:
            await unlink(ctx, org, "account", pm_id=p.id, portal_id=p.portal_id)


@on(router, pm.PmCommandRejected)
async def on_command_rejected(ctx: HandlerContext, event: Event[pm.PmCommandRejected]) -> None:
    """The PM side refused a command: a create's pending pair turns `unlinked` (not re-created on its own)."""
    p, org, st = event.payload, event.org_id, state_of(ctx)
    pending = await st.take_pending(org, p.command_id)
    if pending is None:
        return  # not identity's command (or already settled)
    log.warning("pm side rejected a command", command_type=pending.command_type, reason_code=p.reason_code)
    if pending.command_type in ("pm.client_company.create", "pm.client_user.create") \
            and pending.subject_kind in ("account", "contact"):
        portal_id = await st.portal_of(org)
        if portal_id is None:
            return
        mapping = await st.mapping(org, portal_id, pending.subject_kind, pending.subject_id)
        if mapping is not None and mapping.pending_command_id == p.command_id:
            await publish_mapping(ctx, org, portal_id, pending.subject_kind, pending.subject_id, None, "unlinked")
