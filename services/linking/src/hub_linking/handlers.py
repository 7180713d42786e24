"""Event handlers of the linking service: upstream copies, the integration's settings, links, matching.

Decisions (deliberate, see BRIEF):
- Upstream records (crm.ingest, pm.ingest) and the identity projection are stored for every org,
  whether or not its integration is enabled: matching (S21/S22) needs them at enable time.
- A request for an org whose integration is not enabled (other than enable itself) is refused
  with `integration_disabled`; a won deal of such an org creates nothing.
- Disabling keeps links stored but hidden (S7): they reappear when the same portal is enabled
  again, with no resync (an explicit hub.integration.resync runs matching again).
- Enabling or switching to another portal removes the old portal's links (linked=false events, S20).
- A refusal is an event (linking.request.refused), never a dead letter; bad input is a PermanentError.
- S9: the group is created by the same PM command that creates or edits the project
  (pm.project.create / pm.project.update with new_group_name), so nothing is half-done.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg

from hub_linking import domain, storage
from hub_platform.consumer import INFRASTRUCTURE_ERRORS, HandlerContext, Router
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, identity, pm, requests
from hub_schema.events.common import PermissionProfile, RecordRef
from hub_schema.events.linking import (
    AssociableProjectItem,
    AssociableProjectsListed,
    IntegrationChanged,
    LinkChanged,
    LinkingRequestRefused,
    MatchingCompleted,
    MatchingPage,
    ProjectAssociated,
    ProjectCreationRequested,
    ResyncRequested,
    ServiceKeyRotated,
    SyncStopped,
)
from hub_schema.events.notifications import (
    MatchedClient,
    MatchingReportPage,
    MatchingReportSummary,
    NotificationReportPage,
    NotificationRequested,
    Recipient,
    UnmatchedClient,
)
from hub_schema.events.requests import FieldMapping

router = Router()
UTC = timezone.utc
MATCHING_ATTEMPTS = 3


def now() -> datetime:
    return datetime.now(UTC)


class Refused(Exception):
    """A domain refusal inside a request handler: becomes a linking.request.refused event."""

    def __init__(self, code: str, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.details = details or {}


# --- emit helpers ----------------------------------------------------------------------------------


async def refuse(ctx: HandlerContext, event: Event[Any], exc: Refused) -> None:
    p = event.payload
    ctx.log.info("request refused", reason_code=exc.code, request_type=event.event_type)
    await ctx.emit(LinkingRequestRefused(request_id=p.request_id, request_type=event.event_type,
                                         acting_user_id=p.acting_user_id, reason_code=exc.code,
                                         reason=exc.reason[:2000], details=exc.details),
                   entity_key=f"{event.org_id}:request:{p.request_id}", origin="hub")


async def emit_link(ctx: HandlerContext, org_id: str, portal_id: str, project_id: str, record_type: str,
                    record_id: str, *, linked: bool, source: str) -> bool:
    revision = await storage.set_link(ctx.conn, org_id, portal_id, project_id, record_type, record_id,
                                      active=linked, source=source)
    if revision is None:
        return False
    await ctx.emit(LinkChanged(portal_id=portal_id, project_id=project_id,
                               record=RecordRef(record_type=record_type, record_id=record_id),  # type: ignore[arg-type]
                               linked=linked, revision=revision),
                   entity_key=f"{org_id}:project:{project_id}", org_id=org_id, origin="hub")
    return True


async def emit_command(ctx: HandlerContext, payload: cmd.Command, entity_key: str, org_id: str) -> None:
    await ctx.emit(payload, entity_key=entity_key, org_id=org_id, origin="hub")


async def notify(ctx: HandlerContext, org_id: str, actor: domain.Actor | None, kind: str, *, optional: bool,
                 data: dict[str, Any], report: MatchingReportSummary | None = None,
                 report_pages: list[MatchingReportPage] = ()) -> None:  # type: ignore[assignment]
    """Ask for an e-mail; a matching report's rows go first as pages on the request's own key (same partition,
    so the notification service has them all when the request arrives)."""
    if actor is None or not actor.email:
        ctx.log.warning("no e-mail address for notification", kind=kind)
        return
    request_id = uuid.uuid5(ctx.event.event_id, kind)  # deterministic: a replay asks for the same e-mail
    for rows in report_pages:
        await ctx.emit(NotificationReportPage(request_id=request_id, rows=rows),
                       entity_key=f"{org_id}:{request_id}", org_id=org_id, origin="hub")
    await ctx.emit(NotificationRequested(
        request_id=request_id, kind=kind, optional=optional,  # type: ignore[arg-type]
        recipient=Recipient(user_id=actor.crm_user_id, email=actor.email, name=actor.name,
                            locale=actor.locale, time_zone=actor.time_zone),  # type: ignore[arg-type]
        data=data, matching_report=report),
        entity_key=f"{org_id}:{request_id}", org_id=org_id, origin="hub")


def _integration_changed(row: asyncpg.Record, *, changed_by: str, previous: str | None = None,
                         matching_pending: bool = False, profile_request_id: uuid.UUID | None = None) -> IntegrationChanged:
    enabled = row["state"] == "enabled"
    return IntegrationChanged(
        state=row["state"], portal_id=row["portal_id"] if enabled else None,
        previous_portal_id=previous if previous is not None else (None if enabled else row["portal_id"]),
        deal_won_creates_project=row["deal_won_creates_project"], changed_by=changed_by, changed_at=now(),
        revision=row["revision"],
        field_mapping=[FieldMapping.model_validate(m) for m in row["field_mapping"]] if enabled else None,
        permissions=PermissionProfile.model_validate(row["permissions"]) if enabled else None,
        matching_pending=matching_pending and enabled,
        profile_request_id=profile_request_id if enabled else None,
    )


async def emit_integration(ctx: HandlerContext, org_id: str, changed_by: str, previous: str | None = None,
                           matching_pending: bool = False, profile_request_id: uuid.UUID | None = None) -> None:
    row = await storage.get_integration(ctx.conn, org_id)
    assert row is not None
    payload = _integration_changed(row, changed_by=changed_by, previous=previous, matching_pending=matching_pending,
                                   profile_request_id=profile_request_id)
    await ctx.emit(payload, entity_key=f"{org_id}:integration", org_id=org_id, origin="hub")


# --- identity projection -----------------------------------------------------------------------------


@router.on("identity.user_access.changed")
async def on_user_access(ctx: HandlerContext, event: Event[identity.UserAccessChanged]) -> None:
    await storage.upsert_user(ctx.conn, event.org_id, event.payload)


@router.on("identity.customer_mapping.changed")
async def on_customer_mapping(ctx: HandlerContext, event: Event[identity.CustomerMappingChanged]) -> None:
    p = event.payload
    if p.state == "linked" and p.pm_id:
        await storage.set_pair(ctx.conn, event.org_id, p.portal_id, p.kind, p.crm_id, p.pm_id, p.revision)
    elif p.state == "unlinked":
        await ctx.conn.execute(
            """DELETE FROM customer_pairs WHERE org_id = $1 AND portal_id = $2 AND kind = $3 AND crm_id = $4
               AND revision <= $5""", event.org_id, p.portal_id, p.kind, p.crm_id, p.revision)


# --- CRM ingest ----------------------------------------------------------------------------------------


async def _upsert_record(ctx: HandlerContext, event: Event[Any], record_type: str, *, name: str,
                         account_id: str | None = None, email: str | None = None, won: bool = False,
                         data: dict[str, Any] | None = None) -> bool:
    return await storage.upsert_versioned(
        ctx.conn, "crm_records", {"org_id": event.org_id, "record_type": record_type, "record_id": event.payload.id},
        {"name": name, "account_id": account_id, "email": email, "won": won, "data": data or {}, "deleted": False},
        event.payload.version)


@router.on("crm.account.upserted")
async def on_account(ctx: HandlerContext, event: Event[crm.CrmAccountUpserted]) -> None:
    p = event.payload
    if await _upsert_record(ctx, event, "account", name=p.name,
                            data={"custom_fields": p.custom_fields, "owner_id": p.owner_id}):
        await storage.note_custom_fields(ctx.conn, event.org_id, "accounts",
                                         {k: domain.value_kind(v) for k, v in p.custom_fields.items()})


@router.on("crm.contact.upserted")
async def on_contact(ctx: HandlerContext, event: Event[crm.CrmContactUpserted]) -> None:
    p = event.payload
    name = " ".join(x for x in (p.first_name, p.last_name) if x)
    await _upsert_record(ctx, event, "contact", name=name, account_id=p.account_id, email=p.email,
                         data={"owner_id": p.owner_id})


@router.on("crm.lead.upserted")
async def on_lead(ctx: HandlerContext, event: Event[crm.CrmLeadUpserted]) -> None:
    p = event.payload
    name = " ".join(x for x in (p.first_name, p.last_name) if x)
    await _upsert_record(ctx, event, "lead", name=name, email=p.email, data={"company": p.company})


@router.on("crm.deal.upserted")
async def on_deal(ctx: HandlerContext, event: Event[crm.CrmDealUpserted]) -> None:
    p = event.payload
    org = event.org_id
    # Round trips: the stored deal's `won` is read in the statement that upserts it; when it turns won, the
    # custom fields' kinds, the integration, the account and its pair are read in one statement, and the
    # deal_projects + pending_commands rows are written in one.
    data = {"contact_ids": list(p.contact_ids), "stage": p.stage,
            "amount": float(p.amount) if p.amount is not None else None,
            "closing_date": p.closing_date.isoformat() if p.closing_date else None,
            "owner_id": p.owner_id, "custom_fields": p.custom_fields}
    before, applied = await storage.upsert_deal_keeping_before(
        ctx.conn, {"org_id": org, "record_type": "deal", "record_id": p.id},
        {"name": p.name, "account_id": p.account_id, "email": None, "won": p.won, "data": data, "deleted": False},
        p.version)
    if not applied:
        return  # stale
    kinds = {k: domain.value_kind(v) for k, v in p.custom_fields.items()}
    if p.won and not (before is not None and before["won"]):
        known, integ, account, company = await storage.deal_won_context(
            ctx.conn, org, p.account_id if p.account_id else None, list(kinds))
        await storage.note_custom_fields(ctx.conn, org, "deals", kinds, known)
        await deal_won(ctx, org, p, data, (integ, account, company))
    else:
        await storage.note_custom_fields(ctx.conn, org, "deals", kinds)


async def deal_won(ctx: HandlerContext, org: str, deal: crm.CrmDealUpserted, data: dict[str, Any],
                   known: tuple[Any, Any, str | None]) -> None:
    """S14: exactly one project per won deal, when the org turned it on and a mapping exists.

    `known` = (the integration, the account (name + data) or None, the account's customer pair or None), read by
    `storage.deal_won_context` (none of them is written by this handler)."""
    integ, account, pair = known
    if integ is None or integ["state"] != "enabled" or not integ["deal_won_creates_project"]:
        return
    if not integ["field_mapping"]:
        ctx.log.info("deal won but no field mapping: no project", deal_id=deal.id)
        return
    command_id = uuid.uuid4()
    portal = integ["portal_id"]
    records = [RecordRef(record_type="deal", record_id=deal.id)]
    if deal.account_id:
        records.append(RecordRef(record_type="account", record_id=deal.account_id))
    if not await storage.claim_deal_project(ctx.conn, org, deal.id, command_id, portal,
                                            {"records": [r.model_dump() for r in records], "trigger": "deal_won"}):
        return
    account = account if deal.account_id else None
    account_data = ({"name": account["name"], **account["data"]} if account else None)
    draft = domain.project_from_mapping(integ["field_mapping"], {"name": deal.name, **data}, account_data)
    company = pair if deal.account_id else None
    await emit_command(ctx, cmd.PmProjectCreate(
        command_id=command_id, portal_id=portal, name=draft.name, description=draft.description,
        start_date=draft.start_date, end_date=draft.end_date, custom_fields=draft.custom_fields,
        linked_records=records, client_company_ids=[company] if company else []),
        f"project:{command_id}", org)
    await ctx.emit(ProjectCreationRequested(command_id=command_id, portal_id=portal, trigger="deal_won", records=records),
                   entity_key=f"{org}:deal:{deal.id}", org_id=org, origin="hub")


@router.on("crm.account.deleted", "crm.contact.deleted", "crm.deal.deleted", "crm.lead.deleted")
async def on_record_deleted(ctx: HandlerContext, event: Event[Any]) -> None:
    record_type = event.event_type.split(".")[1]
    await storage.upsert_versioned(
        ctx.conn, "crm_records", {"org_id": event.org_id, "record_type": record_type, "record_id": event.payload.id},
        {"deleted": True}, event.payload.version)


# --- PM ingest -------------------------------------------------------------------------------------------


@router.on("pm.portal.upserted")
async def on_portal(ctx: HandlerContext, event: Event[pm.PmPortalUpserted]) -> None:
    p = event.payload
    await storage.upsert_versioned(ctx.conn, "portals", {"org_id": event.org_id, "portal_id": p.id},
                                   {"name": p.name, "plan": p.plan, "active": p.active}, p.version)


@router.on("pm.project.upserted")
async def on_project(ctx: HandlerContext, event: Event[pm.PmProjectUpserted]) -> None:
    p = event.payload
    org = event.org_id
    applied = await storage.upsert_versioned(
        ctx.conn, "projects", {"org_id": org, "portal_id": p.portal_id, "project_id": p.id},
        {"name": p.name, "status": p.status, "progress_percent": p.progress_percent, "owner_id": p.owner_id,
         "group_id": p.group_id, "user_ids": list(p.user_ids), "client_company_ids": list(p.client_company_ids),
         "client_user_ids": list(p.client_user_ids), "custom_fields": p.custom_fields, "deleted": False},
        p.version)
    # The echo of a project the hub asked for (S9, S14): link it to the records it was created for.
    pending = await storage.take_pending(ctx.conn, org, p.command_id, "create_project")
    if pending is not None:
        for r in pending["data"]["records"]:
            await emit_link(ctx, org, p.portal_id, p.id, r["record_type"], r["record_id"], linked=True,
                            source=pending["data"].get("trigger", "hub"))
    if not applied:
        return
    # A project of a client company already matched to an account is linked to it (S21/S22 onwards).
    integ = await storage.get_integration(ctx.conn, org)
    if integ is None or integ["state"] != "enabled" or integ["portal_id"] != p.portal_id:
        return
    for company in p.client_company_ids:
        account = await ctx.conn.fetchval(
            """SELECT crm_id FROM customer_pairs WHERE org_id = $1 AND portal_id = $2 AND kind = 'account'
               AND pm_id = $3""", org, p.portal_id, company)
        if account:
            await emit_link(ctx, org, p.portal_id, p.id, "account", account, linked=True, source="matching")


async def store_pm_record(ctx: HandlerContext, event: Event[Any], table: str, id_column: str,
                          values: dict[str, Any]) -> bool:
    """Keep the newest copy of a portal's record (dropping stale versions); True if it was applied."""
    p = event.payload
    return await storage.upsert_versioned(
        ctx.conn, table, {"org_id": event.org_id, "portal_id": p.portal_id, id_column: p.id}, values, p.version)


@router.on("pm.project.deleted")
async def on_project_deleted(ctx: HandlerContext, event: Event[pm.PmProjectDeleted]) -> None:
    await store_pm_record(ctx, event, "projects", "project_id",
                          {"name": "", "status": "archived", "progress_percent": 0, "owner_id": "", "deleted": True})


@router.on("pm.client_company.upserted")
async def on_client_company(ctx: HandlerContext, event: Event[pm.PmClientCompanyUpserted]) -> None:
    await store_pm_record(ctx, event, "client_companies", "company_id", {"name": event.payload.name, "deleted": False})


@router.on("pm.client_company.deleted")
async def on_client_company_deleted(ctx: HandlerContext, event: Event[pm.PmClientCompanyDeleted]) -> None:
    await store_pm_record(ctx, event, "client_companies", "company_id", {"name": "", "deleted": True})


@router.on("pm.client_user.upserted")
async def on_client_user(ctx: HandlerContext, event: Event[pm.PmClientUserUpserted]) -> None:
    p = event.payload
    org = event.org_id
    await store_pm_record(ctx, event, "client_users", "client_user_id",
                          {"email": p.email, "name": p.name, "company_id": p.client_company_id, "deleted": False})
    # Echo of a client user the hub created during an association (S4): pair it and add it to the project.
    pending = await storage.take_pending(ctx.conn, org, p.command_id, "client_user_for_project")
    if pending is not None:
        d = pending["data"]
        await storage.set_pair(ctx.conn, org, p.portal_id, "contact", d["contact_id"], p.id)
        command_id = uuid.uuid4()
        await emit_command(ctx, cmd.PmProjectAddClientUsers(command_id=command_id, portal_id=p.portal_id,
                                                            project_id=d["project_id"], client_user_ids=[p.id]),
                           f"project:{d['project_id']}", org)


@router.on("pm.client_user.removed")
async def on_client_user_removed(ctx: HandlerContext, event: Event[pm.PmClientUserRemoved]) -> None:
    await store_pm_record(ctx, event, "client_users", "client_user_id",
                          {"email": "", "name": "", "company_id": "", "deleted": True})


@router.on("pm.project_group.upserted")
async def on_group(ctx: HandlerContext, event: Event[pm.PmProjectGroupUpserted]) -> None:
    await store_pm_record(ctx, event, "project_groups", "group_id", {"name": event.payload.name, "deleted": False})


@router.on("pm.project_group.deleted")
async def on_group_deleted(ctx: HandlerContext, event: Event[pm.PmProjectGroupDeleted]) -> None:
    await store_pm_record(ctx, event, "project_groups", "group_id", {"name": "", "deleted": True})


@router.on("pm.command.rejected")
async def on_pm_rejected(ctx: HandlerContext, event: Event[pm.PmCommandRejected]) -> None:
    """A project the hub asked for was refused upstream: nothing to link; tell the log (and drop the pending)."""
    p = event.payload
    row = await ctx.conn.fetchrow(
        "UPDATE pending_commands SET done = true WHERE org_id = $1 AND command_id = $2 AND NOT done RETURNING kind",
        event.org_id, p.command_id)
    if row is not None:
        ctx.log.info("PM refused a linking command", kind=row["kind"], reason_code=p.reason_code)


# --- requests: integration settings ---------------------------------------------------------------------


async def _admin(ctx: HandlerContext, event: Event[Any]) -> domain.Actor:
    actor = await storage.get_actor(ctx.conn, event.org_id, event.payload.acting_user_id)
    ok, code, reason = domain.may_change_settings(actor)
    if not ok:
        raise Refused(code, reason)
    assert actor is not None
    return actor


async def _paid_portal(ctx: HandlerContext, org: str, portal_id: str) -> asyncpg.Record:
    portal = await storage.get_portal(ctx.conn, org, portal_id)
    if portal is None:
        raise Refused("portal_unknown", f"the hub has not seen portal {portal_id} yet", {"portal_id": portal_id})
    if not portal["active"]:
        raise Refused("portal_inactive", f"portal {portal['name']} is not active", {"portal_id": portal_id})
    if portal["plan"] == "free":
        raise Refused("plan_required", f"portal {portal['name']} is on the free PM plan; the integration needs a "
                                       "paid PM plan", {"portal_id": portal_id, "plan": "free"})
    return portal


def requests_handler(event_type: str):  # type: ignore[no-untyped-def]
    """Register a request handler whose Refused exceptions become refusal events (in a savepoint)."""

    def register(fn):  # type: ignore[no-untyped-def]
        async def run(ctx: HandlerContext, event: Event[Any]) -> None:
            try:
                async with ctx.savepoint():  # a refusal undoes the rows and the events begun
                    await fn(ctx, event)
            except Refused as exc:
                await refuse(ctx, event, exc)
        router.on(event_type)(run)
        return fn

    return register


@requests_handler("hub.integration.enable")
async def on_enable(ctx: HandlerContext, event: Event[requests.IntegrationEnable]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    await _paid_portal(ctx, org, p.portal_id)
    mapping = [m.model_dump() for m in p.field_mapping]
    problems = domain.validate_mapping(mapping, await storage.custom_fields(ctx.conn, org),
                                       await storage.pm_custom_types(ctx.conn, org, p.portal_id))
    if problems:
        raise Refused("invalid_field_mapping", "the field mapping cannot be saved: " + "; ".join(x.text() for x in problems),
                      {"problems": [x.text() for x in problems]})
    current = await storage.get_integration(ctx.conn, org, lock=True)
    previous = None
    if current is not None and current["portal_id"] != p.portal_id:
        if current["state"] == "enabled":
            raise Refused("use_switch_portal", f"the integration uses portal {current['portal_id']}; switch portal to "
                                               "change it", {"current_portal_id": current["portal_id"]})
        previous = current["portal_id"]
        await _remove_portal_links(ctx, org, previous)
    await storage.save_integration(ctx.conn, org, state="enabled", portal_id=p.portal_id, field_mapping=mapping,
                                   permissions=p.permissions.model_dump(), deal_won_creates_project=p.deal_won_creates_project,
                                   enabled_by=actor.crm_user_id)
    current = await storage.get_integration(ctx.conn, org)
    assert current is not None
    # First enable of this portal: match clients to accounts (S21/S22). Re-enabling does not resync (S7).
    first_enable = p.portal_id not in current["matched_portals"]
    # The accepted set-up carries the permission profile: identity applies it from this event, never from the
    # raw request, so a refused enable changes no one's access (S3, S17).
    await emit_integration(ctx, org, actor.crm_user_id, previous, matching_pending=first_enable,
                           profile_request_id=p.request_id)
    if first_enable:
        await run_matching(ctx, org, p.portal_id, actor)


@requests_handler("hub.integration.disable")
async def on_disable(ctx: HandlerContext, event: Event[requests.IntegrationDisable]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    current = await storage.get_integration(ctx.conn, org, lock=True)
    if current is None or current["state"] != "enabled":
        raise Refused("integration_disabled", "the integration is not enabled")
    if current["portal_id"] != p.portal_id:
        raise Refused("stale_request", f"the integration uses portal {current['portal_id']}, not {p.portal_id}")
    await ctx.conn.execute(
        "UPDATE integrations SET state = 'disabled', revision = revision + 1, changed_at = now() WHERE org_id = $1", org)
    await emit_integration(ctx, org, actor.crm_user_id)
    at = now()
    await ctx.emit(SyncStopped(portal_id=p.portal_id, stopped_by=actor.crm_user_id, stopped_at=at),
                   entity_key=f"{org}:integration", origin="hub")
    await notify(ctx, org, actor, "sync_stopped", optional=True,
                 data={"portal_id": p.portal_id, "stopped_at": at.isoformat(),
                       **await _portal_name(ctx, org, p.portal_id)})


@requests_handler("hub.integration.resync")
async def on_resync(ctx: HandlerContext, event: Event[requests.IntegrationResync]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    current = await storage.get_integration(ctx.conn, org, lock=True)
    if current is None or current["state"] != "enabled":
        raise Refused("integration_disabled", "enable the integration before asking for a resync")
    if current["portal_id"] != p.portal_id:
        raise Refused("stale_request", f"the integration uses portal {current['portal_id']}, not {p.portal_id}")
    await ctx.emit(ResyncRequested(request_id=p.request_id, portal_id=p.portal_id, requested_by=actor.crm_user_id),
                   entity_key=f"{org}:integration", origin="hub")
    await run_matching(ctx, org, p.portal_id, actor)


@requests_handler("hub.integration.switch_portal")
async def on_switch(ctx: HandlerContext, event: Event[requests.IntegrationSwitchPortal]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    current = await storage.get_integration(ctx.conn, org, lock=True)
    if current is None or current["state"] != "enabled":
        raise Refused("integration_disabled", "the integration is not enabled; enable it with the new portal")
    if current["portal_id"] != p.current_portal_id:
        raise Refused("stale_request", f"the integration uses portal {current['portal_id']}, not {p.current_portal_id}")
    await _paid_portal(ctx, org, p.new_portal_id)
    await _remove_portal_links(ctx, org, p.current_portal_id)
    await ctx.conn.execute(
        """UPDATE integrations SET portal_id = $2, enabled_by = $3, revision = revision + 1, changed_at = now()
           WHERE org_id = $1""", org, p.new_portal_id, actor.crm_user_id)
    await emit_integration(ctx, org, actor.crm_user_id, p.current_portal_id, matching_pending=True)
    await run_matching(ctx, org, p.new_portal_id, actor)


async def _remove_portal_links(ctx: HandlerContext, org: str, portal_id: str) -> None:
    """S20: deactivating a portal removes its project links (each announced as linked=false)."""
    for link in await storage.active_links_of_portal(ctx.conn, org, portal_id):
        await emit_link(ctx, org, portal_id, link["project_id"], link["record_type"], link["record_id"],
                        linked=False, source="portal_switched")


@requests_handler("hub.service_key.generate")
async def on_service_key(ctx: HandlerContext, event: Event[requests.ServiceKeyGenerate]) -> None:
    p = event.payload
    actor = await _admin(ctx, event)
    await storage.store_service_key(ctx.conn, event.org_id, p.key_id, p.key_sha256, actor.crm_user_id)
    # the audit trail of every key minted (as the HTTP path logs it): org, who, when; never the key nor its hash
    ctx.log.info("service key minted", org_id=event.org_id, key_id=str(p.key_id), minted_by=actor.crm_user_id,
                 credential="hub.service_key.generate", minted_at=now().isoformat())
    await ctx.emit(ServiceKeyRotated(key_id=p.key_id, key_sha256=p.key_sha256, rotated_by=actor.crm_user_id,
                                     rotated_at=now()),
                   entity_key=f"{event.org_id}:service_key", origin="hub")


# --- matching (S21/S22) -------------------------------------------------------------------------------


async def run_matching(ctx: HandlerContext, org: str, portal_id: str, admin: domain.Actor) -> None:
    """Match every client company of the portal to CRM accounts; link; report once at the end."""
    conn = ctx.conn
    clients = await conn.fetch(
        "SELECT company_id, name FROM client_companies WHERE org_id = $1 AND portal_id = $2 AND NOT deleted "
        "ORDER BY company_id", org, portal_id)
    accounts = await conn.fetch(
        "SELECT record_id, name FROM crm_records WHERE org_id = $1 AND record_type = 'account' AND NOT deleted", org)
    index = domain.index_accounts((a["record_id"], a["name"]) for a in accounts)
    matched: list[MatchedClient] = []
    unmatched: list[UnmatchedClient] = []
    linked = 0
    for client in clients:
        outcome: domain.MatchResult | None = None
        for attempt in range(1, MATCHING_ATTEMPTS + 1):
            try:
                async with ctx.savepoint():
                    outcome, n = await _match_one(ctx, org, portal_id, client["company_id"], client["name"], index)
                linked += n
                break
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:  # transient: retried, then reported as an error for this client
                ctx.log.warning("matching a client failed", client_id=client["company_id"], attempt=attempt,
                                error=repr(exc))
                outcome = domain.MatchResult(client["company_id"], client["name"], "error",
                                             reason=f"matching failed after {attempt} attempts: {type(exc).__name__}")
        assert outcome is not None
        if outcome.outcome == "matched":
            matched.append(MatchedClient(client_company_id=outcome.client_id, client_name=outcome.client_name,
                                         account_id=outcome.account_id or "", account_name=outcome.account_name or ""))
        else:
            unmatched.append(UnmatchedClient(client_company_id=outcome.client_id, client_name=outcome.client_name,
                                             reason_code=outcome.outcome, reason=outcome.reason,  # type: ignore[arg-type]
                                             account_names=list(outcome.candidates)))
    await storage.mark_matched(conn, org, portal_id)
    # The report goes by reference: its rows in pages cut to fit a message, then the counts (issue 15).
    cut = domain.report_pages(matched, unmatched)
    pages = [MatchingReportPage(page=n, pages=len(cut), matched=m, unmatched=u) for n, (m, u) in enumerate(cut, 1)]
    report = MatchingReportSummary(report_id=uuid.uuid5(ctx.event.event_id, "matching_report"), portal_id=portal_id,
                                   finished_at=now(), matched=len(matched), unmatched=len(unmatched), pages=len(pages))
    # Same key as linking.integration.changed: identity must see the enable (matching_pending) before the result.
    for rows in pages:
        await ctx.emit(MatchingPage(report_id=report.report_id, portal_id=portal_id, rows=rows),
                       entity_key=f"{org}:integration", org_id=org, origin="hub")
    await ctx.emit(MatchingCompleted(report=report, requested_by=admin.crm_user_id, projects_linked=linked),
                   entity_key=f"{org}:integration", org_id=org, origin="hub")
    await notify(ctx, org, admin, "matching_report", optional=False,
                 data={"counts": {"matched": len(matched), "unmatched": len(unmatched)},
                       **await _portal_name(ctx, org, portal_id)}, report=report, report_pages=pages)


async def _portal_name(ctx: HandlerContext, org: str, portal_id: str) -> dict[str, str]:
    """`portal_name` for an e-mail, when the portal is known (people read names, not ids)."""
    portal = await storage.get_portal(ctx.conn, org, portal_id)
    return {"portal_name": portal["name"]} if portal is not None else {}


async def _match_one(ctx: HandlerContext, org: str, portal_id: str, company_id: str, name: str,
                     index: dict[str, list[tuple[str, str]]]) -> tuple[domain.MatchResult, int]:
    conn = ctx.conn
    result = domain.match_client(company_id, name, index)
    if result.outcome != "matched":
        return result, 0
    account_id = result.account_id or ""
    paired = await storage.get_pair(conn, org, portal_id, "account", account_id)
    if paired is not None and paired != company_id:
        return domain.MatchResult(company_id, name, "error",
                                  reason=f"account {result.account_name} is already paired with client company "
                                         f"{paired}"), 0
    await storage.set_pair(conn, org, portal_id, "account", account_id, company_id)
    links = 0
    projects = await conn.fetch(
        """SELECT project_id, client_user_ids FROM projects WHERE org_id = $1 AND portal_id = $2 AND NOT deleted
           AND client_company_ids ? $3 ORDER BY project_id""", org, portal_id, company_id)
    for project in projects:
        links += await emit_link(ctx, org, portal_id, project["project_id"], "account", account_id, linked=True,
                                 source="matching")
    # Contacts of the account whose e-mail is a client user's of this company: link them to its projects too.
    contacts = {domain.normalise_email(c["email"]): c["record_id"]
                for c in await storage.contacts_of_account(conn, org, account_id) if c["email"]}
    users = await conn.fetch(
        "SELECT client_user_id, email FROM client_users WHERE org_id = $1 AND portal_id = $2 AND company_id = $3 "
        "AND NOT deleted", org, portal_id, company_id)
    for cu in users:
        contact_id = contacts.get(domain.normalise_email(cu["email"]))
        if contact_id is None:
            continue
        await storage.set_pair(conn, org, portal_id, "contact", contact_id, cu["client_user_id"])
        for project in projects:
            if cu["client_user_id"] in project["client_user_ids"]:
                links += await emit_link(ctx, org, portal_id, project["project_id"], "contact", contact_id,
                                         linked=True, source="matching")
    return result, links


# --- requests: links (S4, S9, S16, S19) --------------------------------------------------------------------


async def _enabled(ctx: HandlerContext, org: str) -> asyncpg.Record:
    integ = await storage.get_integration(ctx.conn, org)
    if integ is None or integ["state"] != "enabled":
        raise Refused("integration_disabled", "the integration is not enabled for this CRM org")
    return integ


async def _linker(ctx: HandlerContext, event: Event[Any]) -> domain.Actor:
    actor = await storage.get_actor(ctx.conn, event.org_id, event.payload.acting_user_id)
    ok, code, reason = domain.may_link_at_all(actor)
    if not ok:
        raise Refused(code, reason)
    assert actor is not None
    return actor


async def _record(ctx: HandlerContext, org: str, record_type: str, record_id: str) -> asyncpg.Record:
    record = await storage.get_record(ctx.conn, org, record_type, record_id)
    if record is None:
        raise Refused("not_found", f"the hub does not know {record_type} {record_id}",
                      {"record_type": record_type, "record_id": record_id})
    return record


def _account_of(record: asyncpg.Record) -> str | None:
    if record["record_type"] == "account":
        return record["record_id"]
    return record["account_id"]


async def _offered_contacts(ctx: HandlerContext, org: str, record: asyncpg.Record) -> list[asyncpg.Record]:
    """S4: a contact record offers itself; an account its contacts; a deal its contacts and its account's."""
    rt = record["record_type"]
    if rt == "contact":
        return [record]
    if rt == "lead":
        return []
    out = {}
    if rt == "deal":
        for cid in record["data"].get("contact_ids", []):
            c = await storage.get_record(ctx.conn, org, "contact", cid)
            if c is not None:
                out[cid] = c
    account_id = _account_of(record)
    if account_id:
        for c in await storage.contacts_of_account(ctx.conn, org, account_id):
            out[c["record_id"]] = c
    return [out[k] for k in sorted(out)]


async def _chosen_contacts(ctx: HandlerContext, org: str, record: asyncpg.Record, chosen: list[str],
                           default_all: bool) -> list[asyncpg.Record]:
    offered = {c["record_id"]: c for c in await _offered_contacts(ctx, org, record)}
    if record["record_type"] == "contact":
        return [record]
    if not chosen:
        return list(offered.values()) if default_all else []
    missing = [c for c in chosen if c not in offered]
    if missing:
        raise Refused("contact_not_offered", f"contacts {', '.join(missing)} are not contacts of "
                                             f"{record['record_type']} {record['record_id']}", {"contact_ids": missing})
    return [offered[c] for c in chosen]


async def _check_duplicates(ctx: HandlerContext, event: Event[Any], actor: domain.Actor,
                            contacts: list[asyncpg.Record]) -> None:
    """S19: client-user e-mails are unique per portal; refuse the whole request, tell the user."""
    dups = domain.duplicate_emails((c["record_id"], c["email"]) for c in contacts)
    if not dups:
        return
    names = {c["record_id"]: c["name"] for c in contacts}
    parts = [f"{email}: " + ", ".join(f"{names[i]} ({i})" for i in ids) for email, ids in dups.items()]
    # `email` and `contacts` are what the duplicate_client_emails e-mail needs (notifications.py contract).
    details = {"duplicates": [{"email": e, "contact_ids": ids} for e, ids in dups.items()],
               "email": ", ".join(dups),
               "contacts": [{"id": i, "name": names[i]} for ids in dups.values() for i in ids]}
    raise Refused("duplicate_email", "these contacts share an e-mail address (client-user e-mails are unique per "
                                     "portal): " + "; ".join(parts), details)


async def _grants(ctx: HandlerContext, org: str, grants: list[requests.CrmUserGrant]) -> list[cmd.ProjectUserGrant]:
    """CRM users added with the role and permissions shown for them (possibly changed) (S4)."""
    out = []
    missing = []
    for g in grants:
        user = await storage.get_actor(ctx.conn, org, g.user_id)
        if user is None or not user.portal_user_id or not user.active:
            missing.append(g.user_id)
            continue
        out.append(cmd.ProjectUserGrant(user_id=user.portal_user_id, role=g.role, permissions=list(g.permissions)))
    if missing:
        raise Refused("crm_user_not_in_portal", f"CRM users {', '.join(missing)} have no portal user yet; import them "
                                                "first", {"user_ids": missing})
    return out


async def _owner(ctx: HandlerContext, org: str, owner_id: str | None) -> str | None:
    """The owner is chosen among CRM users; the PM tool needs their portal user."""
    if owner_id is None:
        return None
    user = await storage.get_actor(ctx.conn, org, owner_id)
    return user.portal_user_id if user is not None and user.portal_user_id else owner_id


async def _group(ctx: HandlerContext, org: str, portal: str, group_id: str | None) -> None:
    if group_id is None:
        return
    ok = await ctx.conn.fetchval(
        "SELECT true FROM project_groups WHERE org_id = $1 AND portal_id = $2 AND group_id = $3 AND NOT deleted",
        org, portal, group_id)
    if not ok:
        raise Refused("not_found", f"project group {group_id} does not exist in the portal", {"group_id": group_id})


@requests_handler("hub.projects.list_associable")
async def on_list_associable(ctx: HandlerContext, event: Event[requests.ProjectsListAssociable]) -> None:
    p = event.payload
    org = event.org_id
    integ = await _enabled(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ["portal_id"]
    linked = await storage.linked_project_ids(ctx.conn, org, portal, p.record_type, p.record_id)
    offered = [AssociableProjectItem(project_id=r["project_id"], name=r["name"], status=r["status"],
                                     progress_percent=r["progress_percent"])
               for r in await storage.projects_of_portal(ctx.conn, org, portal)
               if r["project_id"] not in linked and domain.may_link_project(actor, dict(r))]
    await ctx.emit(AssociableProjectsListed(request_id=p.request_id, acting_user_id=p.acting_user_id,
                                            record=RecordRef(record_type=p.record_type, record_id=p.record_id),
                                            portal_id=portal, projects=offered[:1000]),
                   entity_key=f"{org}:request:{p.request_id}", origin="hub")


@requests_handler("hub.project.associate")
async def on_associate(ctx: HandlerContext, event: Event[requests.ProjectAssociate]) -> None:
    p = event.payload
    org = event.org_id
    integ = await _enabled(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ["portal_id"]
    project = await storage.get_project(ctx.conn, org, portal, p.project_id)
    if project is None:
        raise Refused("not_found", f"project {p.project_id} is not in portal {portal}", {"project_id": p.project_id})
    if not domain.may_link_project(actor, dict(project)):
        raise Refused("permission_denied", f"you may not edit or associate project {project['name']}",
                      {"project_id": p.project_id})
    record = await _record(ctx, org, p.record_type, p.record_id)
    if await storage.is_linked(ctx.conn, org, portal, p.project_id, p.record_type, p.record_id):
        raise Refused("already_linked", f"project {project['name']} is already associated with this "
                                        f"{p.record_type}")
    await _group(ctx, org, portal, p.group_id)
    grants = await _grants(ctx, org, list(p.crm_users))
    contacts = await _chosen_contacts(ctx, org, record, list(p.client_contact_ids), default_all=False)
    await _check_duplicates(ctx, event, actor, contacts)
    account_id = _account_of(record)
    target_company = await storage.get_pair(ctx.conn, org, portal, "account", account_id) if account_id else None
    existing: list[str] = []
    to_create: list[asyncpg.Record] = []
    for c in contacts:
        cu_id = await storage.get_pair(ctx.conn, org, portal, "contact", c["record_id"])
        if cu_id is not None:
            cu = await storage.get_client_user(ctx.conn, org, portal, cu_id)
            if cu is not None and target_company is not None and cu["company_id"] != target_company:
                raise Refused("contact_in_other_company",
                              f"contact {c['name']} is already a client user of another client company "
                              f"({cu['company_id']}); a contact can belong to one client company only",
                              {"contact_id": c["record_id"], "client_company_id": cu["company_id"]})
            existing.append(cu_id)
        else:
            if target_company is None:
                raise Refused("no_client_company", f"contact {c['name']} has no client user and its account has no "
                                                   "client company in the portal yet", {"contact_id": c["record_id"]})
            if not c["email"]:
                raise Refused("invalid", f"contact {c['name']} has no e-mail address", {"contact_id": c["record_id"]})
            to_create.append(c)
    command_ids: list[uuid.UUID] = []
    key = f"project:{p.project_id}"
    owner = await _owner(ctx, org, p.owner_id)
    if owner is not None or p.group_id is not None or p.new_group_name is not None:
        command_ids.append(uuid.uuid4())
        await emit_command(ctx, cmd.PmProjectUpdate(command_id=command_ids[-1], portal_id=portal, project_id=p.project_id,
                                                    owner_id=owner, group_id=p.group_id,
                                                    new_group_name=p.new_group_name), key, org)
    if grants:
        command_ids.append(uuid.uuid4())
        await emit_command(ctx, cmd.PmProjectAddUsers(command_id=command_ids[-1], portal_id=portal,
                                                      project_id=p.project_id, users=grants), key, org)
    if existing:
        command_ids.append(uuid.uuid4())
        await emit_command(ctx, cmd.PmProjectAddClientUsers(command_id=command_ids[-1], portal_id=portal,
                                                            project_id=p.project_id,
                                                            client_user_ids=sorted(set(existing))), key, org)
    for c in to_create:
        command_ids.append(uuid.uuid4())
        assert target_company is not None
        await emit_command(ctx, cmd.PmClientUserCreate(command_id=command_ids[-1], portal_id=portal,
                                                       client_company_id=target_company, email=c["email"],
                                                       name=c["name"], crm_record_type="contact",
                                                       crm_record_id=c["record_id"]), f"client_user:{command_ids[-1]}", org)
        await storage.add_pending(ctx.conn, command_ids[-1], org, "client_user_for_project", portal,
                                  {"project_id": p.project_id, "contact_id": c["record_id"]})
    await emit_link(ctx, org, portal, p.project_id, p.record_type, p.record_id, linked=True, source="associate")
    await ctx.emit(ProjectAssociated(request_id=p.request_id, acting_user_id=p.acting_user_id, portal_id=portal,
                                     project_id=p.project_id,
                                     record=RecordRef(record_type=p.record_type, record_id=p.record_id),
                                     project_user_ids=list(project["user_ids"]),
                                     crm_user_ids=[g.user_id for g in p.crm_users],
                                     client_contact_ids=[c["record_id"] for c in contacts], command_ids=command_ids),
                   entity_key=f"{org}:project:{p.project_id}", origin="hub")


@requests_handler("hub.project.dissociate")
async def on_dissociate(ctx: HandlerContext, event: Event[requests.ProjectDissociate]) -> None:
    p = event.payload
    org = event.org_id
    integ = await _enabled(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ["portal_id"]
    project = await storage.get_project(ctx.conn, org, portal, p.project_id)
    if project is not None and not domain.may_link_project(actor, dict(project)):
        raise Refused("permission_denied", f"you may not edit or associate project {project['name']}")
    if not await emit_link(ctx, org, portal, p.project_id, p.record_type, p.record_id, linked=False,
                           source="dissociate"):
        raise Refused("not_linked", f"project {p.project_id} is not associated with {p.record_type} {p.record_id}")


@router.on("hub.project.create_from_record")
async def on_create_from_record(ctx: HandlerContext, event: Event[requests.ProjectCreateFromRecord]) -> None:
    try:
        async with ctx.savepoint():
            await _create_from_record(ctx, event)
    except Refused as exc:
        await refuse(ctx, event, exc)
        if exc.code == "duplicate_email":
            actor = await storage.get_actor(ctx.conn, event.org_id, event.payload.acting_user_id)
            record = await storage.get_record(ctx.conn, event.org_id, event.payload.record_type, event.payload.record_id)
            named = ({"account_name" if record["record_type"] == "account" else "record_name": record["name"]}
                     if record is not None else {})
            await notify(ctx, event.org_id, actor, "duplicate_client_emails", optional=False,
                         data={"reason": exc.reason, "reason_code": exc.code, **exc.details,
                               "record_type": event.payload.record_type, "record_id": event.payload.record_id,
                               **named, "project_name": event.payload.name, "cause": "project_creation",
                               "occurred_at": event.envelope.occurred_at.isoformat()})


async def _create_from_record(ctx: HandlerContext, event: Event[requests.ProjectCreateFromRecord]) -> None:
    """S9, S19: one pm.project.create carries group, client company and client users, or nothing is sent."""
    p = event.payload
    org = event.org_id
    integ = await _enabled(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ["portal_id"]
    record = await _record(ctx, org, p.record_type, p.record_id)
    await _group(ctx, org, portal, p.group_id)
    grants = await _grants(ctx, org, list(p.crm_users))
    contacts = await _chosen_contacts(ctx, org, record, list(p.client_contact_ids), default_all=True)
    await _check_duplicates(ctx, event, actor, contacts)
    account_id = _account_of(record)
    account = await storage.get_record(ctx.conn, org, "account", account_id) if account_id else None
    company = await storage.get_pair(ctx.conn, org, portal, "account", account_id) if account_id else None
    existing: list[str] = []
    new_users: list[cmd.NewClientUser] = []
    for c in contacts:
        cu_id = await storage.get_pair(ctx.conn, org, portal, "contact", c["record_id"])
        if cu_id is not None:
            existing.append(cu_id)
        elif c["email"]:
            new_users.append(cmd.NewClientUser(email=c["email"], name=c["name"], crm_contact_id=c["record_id"],
                                               client_company_id=company))
    new_company = None
    if company is None and new_users:
        if account is None:
            raise Refused("no_client_company", "the contacts have no account to make a client company from")
        new_company = cmd.NewClientCompany(name=account["name"], crm_account_id=account["record_id"])
    records = [RecordRef(record_type=p.record_type, record_id=p.record_id)]
    if p.record_type == "deal" and account_id:
        records.append(RecordRef(record_type="account", record_id=account_id))
    command_id = uuid.uuid4()
    await emit_command(ctx, cmd.PmProjectCreate(
        command_id=command_id, portal_id=portal, name=p.name, description=p.description,
        owner_id=await _owner(ctx, org, p.owner_id), group_id=p.group_id, new_group_name=p.new_group_name,
        linked_records=records, users=grants, client_company_ids=[company] if company else [],
        client_user_ids=sorted(set(existing)), new_client_company=new_company, new_client_users=new_users),
        f"project:{command_id}", org)
    await storage.add_pending(ctx.conn, command_id, org, "create_project", portal,
                              {"records": [r.model_dump() for r in records], "trigger": "create_from_record"})
    await ctx.emit(ProjectCreationRequested(command_id=command_id, portal_id=portal, trigger="create_from_record",
                                            records=records),
                   entity_key=f"{org}:request:{p.request_id}", origin="hub")
