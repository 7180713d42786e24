"""Copies of the upstream records and of identity's projection, kept in the batch state.

Upstream records (crm.ingest, pm.ingest) and the identity projection are stored for every org, whether or not
its integration is enabled: matching (S21/S22) needs them at enable time. A copy changes only when the incoming
upstream version is newer than the stored one (stale and out-of-order events are dropped).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from hub_linking import rows, storage
from hub_linking.handlers.common import emit_command, emit_links, state_of
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, identity, pm

router = Router()


# --- identity projection -----------------------------------------------------------------------------


@router.on(identity.UserAccessChanged)
async def on_user_access(ctx: HandlerContext, event: Event[identity.UserAccessChanged]) -> None:
    p = event.payload
    await state_of(ctx).users.apply(ctx.conn, rows.User(
        org_id=event.org_id, crm_user_id=p.crm_user_id, email=p.email, name=p.name, locale=p.locale,
        time_zone=p.time_zone, active=p.active, is_admin=p.is_admin, portal_id=p.portal_id,
        portal_user_id=p.portal_user_id, role=p.profile.role, permissions=list(p.profile.permissions),
        revision=p.revision))


@router.on(identity.CustomerMappingChanged)
async def on_customer_mapping(ctx: HandlerContext, event: Event[identity.CustomerMappingChanged]) -> None:
    p = event.payload
    state = state_of(ctx)
    if p.state == "linked" and p.pm_id:
        await state.set_pair(ctx.conn, rows.Pair(event.org_id, p.portal_id, p.kind, p.crm_id, p.pm_id, p.revision))
    elif p.state == "unlinked":
        await state.drop_pair(ctx.conn, (event.org_id, p.portal_id, p.kind, p.crm_id), p.revision)


# --- CRM ingest ----------------------------------------------------------------------------------------


@router.on(crm.CrmAccountUpserted)
async def on_account(ctx: HandlerContext, event: Event[crm.CrmAccountUpserted]) -> None:
    p = event.payload
    state = state_of(ctx)
    if await state.records.apply(ctx.conn, rows.CrmRecord(
            event.org_id, "account", p.id, p.version, name=p.name,
            data={"custom_fields": p.custom_fields, "owner_id": p.owner_id})):
        await state.note_kinds(ctx.conn, event.org_id, "accounts", p.custom_fields)


@router.on(crm.CrmContactUpserted)
async def on_contact(ctx: HandlerContext, event: Event[crm.CrmContactUpserted]) -> None:
    p = event.payload
    name = " ".join(x for x in (p.first_name, p.last_name) if x)
    await state_of(ctx).records.apply(ctx.conn, rows.CrmRecord(
        event.org_id, "contact", p.id, p.version, name=name, account_id=p.account_id, email=p.email,
        data={"owner_id": p.owner_id}))


@router.on(crm.CrmLeadUpserted)
async def on_lead(ctx: HandlerContext, event: Event[crm.CrmLeadUpserted]) -> None:
    p = event.payload
    name = " ".join(x for x in (p.first_name, p.last_name) if x)
    await state_of(ctx).records.apply(ctx.conn, rows.CrmRecord(
        event.org_id, "lead", p.id, p.version, name=name, email=p.email, data={"company": p.company}))


@router.on(crm.CrmAccountDeleted, crm.CrmContactDeleted, crm.CrmDealDeleted, crm.CrmLeadDeleted)
async def on_record_deleted(ctx: HandlerContext, event: Event[Any]) -> None:
    """The record is kept, marked deleted (a stored newer version wins)."""
    record_type = event.event_type.split(".")[1]
    await _mark_deleted(ctx, state_of(ctx).records, (event.org_id, record_type, event.payload.id),
                        rows.CrmRecord(event.org_id, record_type, event.payload.id, event.payload.version, deleted=True),
                        deleted=True, version=event.payload.version)


async def _mark_deleted(ctx: HandlerContext, table: Any, key: tuple[str, ...], fresh: Any, **changes: Any) -> None:
    """A deletion keeps the stored row's other columns (only the deletion's own fields change)."""
    current = await table.get(ctx.conn, key)
    await table.apply(ctx.conn, dataclasses.replace(current, **changes) if current is not None else fresh)


# --- PM ingest -------------------------------------------------------------------------------------------


@router.on(pm.PmPortalUpserted)
async def on_portal(ctx: HandlerContext, event: Event[pm.PmPortalUpserted]) -> None:
    p = event.payload
    await state_of(ctx).portals.apply(ctx.conn, rows.Portal(event.org_id, p.id, p.name, p.plan, p.active, p.version))


@router.on(pm.PmProjectUpserted)
async def on_project(ctx: HandlerContext, event: Event[pm.PmProjectUpserted]) -> None:
    p = event.payload
    org = event.org_id
    state = state_of(ctx)
    applied = await state.projects.apply(ctx.conn, rows.Project(
        org, p.portal_id, p.id, name=p.name, status=p.status, progress_percent=p.progress_percent, owner_id=p.owner_id,
        group_id=p.group_id, user_ids=list(p.user_ids), client_company_ids=list(p.client_company_ids),
        client_user_ids=list(p.client_user_ids), custom_fields=p.custom_fields, version=p.version))
    companies = list(p.client_company_ids) if applied else []
    if p.command_id is None and not companies:
        return
    await state.write_through(ctx.conn)  # links and pending commands live on the database only
    # The echo of a project the hub asked for (S9, S14): link it to the records it was created for.
    pending = await storage.take_pending(ctx.conn, org, p.command_id, "create_project")
    if pending is not None:
        await emit_links(ctx, org, p.portal_id, [(p.id, r["record_type"], r["record_id"]) for r in pending.data["records"]],
                         linked=True, source=pending.data.get("trigger", "hub"))
    if not companies:
        return
    # A project of a client company already matched to an account is linked to it (S21/S22 onwards).
    integ = await storage.get_integration(ctx.conn, org)
    if integ is None or not integ.enabled or integ.portal_id != p.portal_id:
        return
    accounts = await storage.accounts_of_companies(ctx.conn, org, p.portal_id, companies)
    await emit_links(ctx, org, p.portal_id, [(p.id, "account", accounts[c]) for c in companies if c in accounts],
                     linked=True, source="matching")


@router.on(pm.PmProjectDeleted)
async def on_project_deleted(ctx: HandlerContext, event: Event[pm.PmProjectDeleted]) -> None:
    p = event.payload
    gone = dict(name="", status="archived", progress_percent=0, owner_id="", deleted=True, version=p.version)
    await _mark_deleted(ctx, state_of(ctx).projects, (event.org_id, p.portal_id, p.id),
                        rows.Project(event.org_id, p.portal_id, p.id, **gone), **gone)  # type: ignore[arg-type]


@router.on(pm.PmClientCompanyUpserted)
async def on_client_company(ctx: HandlerContext, event: Event[pm.PmClientCompanyUpserted]) -> None:
    p = event.payload
    await state_of(ctx).companies.apply(ctx.conn, rows.ClientCompany(event.org_id, p.portal_id, p.id, p.name, p.version))


@router.on(pm.PmClientCompanyDeleted)
async def on_client_company_deleted(ctx: HandlerContext, event: Event[pm.PmClientCompanyDeleted]) -> None:
    p = event.payload
    await state_of(ctx).companies.apply(
        ctx.conn, rows.ClientCompany(event.org_id, p.portal_id, p.id, "", p.version, deleted=True))


@router.on(pm.PmClientUserUpserted)
async def on_client_user(ctx: HandlerContext, event: Event[pm.PmClientUserUpserted]) -> None:
    p = event.payload
    org = event.org_id
    state = state_of(ctx)
    await state.client_users.apply(ctx.conn, rows.ClientUser(
        org, p.portal_id, p.id, email=p.email, name=p.name, company_id=p.client_company_id, version=p.version))
    if p.command_id is None:
        return
    await state.write_through(ctx.conn)  # pending commands live on the database only
    # Echo of a client user the hub created during an association (S4): pair it and add it to the project.
    pending = await storage.take_pending(ctx.conn, org, p.command_id, "client_user_for_project")
    if pending is not None:
        d = pending.data
        await storage.set_pairs(ctx.conn, org, p.portal_id, "contact", {d["contact_id"]: p.id})
        await emit_command(ctx, cmd.PmProjectAddClientUsers(command_id=uuid.uuid4(), portal_id=p.portal_id,
                                                            project_id=d["project_id"], client_user_ids=[p.id]),
                           f"project:{d['project_id']}", org)


@router.on(pm.PmClientUserRemoved)
async def on_client_user_removed(ctx: HandlerContext, event: Event[pm.PmClientUserRemoved]) -> None:
    p = event.payload
    await state_of(ctx).client_users.apply(ctx.conn, rows.ClientUser(
        event.org_id, p.portal_id, p.id, email="", name="", company_id="", version=p.version, deleted=True))


@router.on(pm.PmProjectGroupUpserted)
async def on_group(ctx: HandlerContext, event: Event[pm.PmProjectGroupUpserted]) -> None:
    p = event.payload
    await state_of(ctx).groups.apply(ctx.conn, rows.ProjectGroup(event.org_id, p.portal_id, p.id, p.name, p.version))


@router.on(pm.PmProjectGroupDeleted)
async def on_group_deleted(ctx: HandlerContext, event: Event[pm.PmProjectGroupDeleted]) -> None:
    p = event.payload
    await state_of(ctx).groups.apply(
        ctx.conn, rows.ProjectGroup(event.org_id, p.portal_id, p.id, "", p.version, deleted=True))


@router.on(pm.PmCommandRejected)
async def on_pm_rejected(ctx: HandlerContext, event: Event[pm.PmCommandRejected]) -> None:
    """A command the hub sent was refused upstream: nothing to link; tell the log (and drop the pending)."""
    p = event.payload
    await state_of(ctx).write_through(ctx.conn)
    pending = await storage.take_pending(ctx.conn, event.org_id, p.command_id, None)
    if pending is not None:
        ctx.log.info("PM refused a linking command", kind=pending.kind, reason_code=p.reason_code)
