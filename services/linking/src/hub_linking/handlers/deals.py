"""Deals, and the project a won deal creates (S14): the bench's hot path, entirely on the batch state.

A deal of an org whose integration is not enabled (or does not create projects on won deals) creates nothing.
"""

from __future__ import annotations

import uuid

from hub_linking import domain, rows
from hub_linking.handlers.common import count_project_requested, emit_command, state_of
from hub_linking.state import LinkingState
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm
from hub_schema.events.common import RecordRef
from hub_schema.events.linking import ProjectCreationRequested

router = Router()


@router.on(crm.CrmDealUpserted)
async def on_deal(ctx: HandlerContext, event: Event[crm.CrmDealUpserted]) -> None:
    p = event.payload
    org = event.org_id
    state = state_of(ctx)
    data = {"contact_ids": list(p.contact_ids), "stage": p.stage,
            "amount": float(p.amount) if p.amount is not None else None,
            "closing_date": p.closing_date.isoformat() if p.closing_date else None,
            "owner_id": p.owner_id, "custom_fields": p.custom_fields}
    before = await state.records.get(ctx.conn, (org, "deal", p.id))
    deal = rows.CrmRecord(org, "deal", p.id, p.version, name=p.name, account_id=p.account_id, won=p.won, data=data)
    if not await state.records.apply(ctx.conn, deal):
        return  # stale
    await state.note_kinds(ctx.conn, org, "deals", p.custom_fields)
    if p.won and not (before is not None and before.won):
        await deal_won(ctx, state, deal)


async def deal_won(ctx: HandlerContext, state: LinkingState, deal: rows.CrmRecord) -> None:
    """S14: exactly one project per won deal, when the org turned it on and a mapping exists."""
    org = deal.org_id
    integ = await state.integration(ctx.conn, org)
    if integ is None or not integ.enabled or not integ.deal_won_creates_project:
        return
    if not integ.field_mapping:
        ctx.log.info("deal won but no field mapping: no project", deal_id=deal.record_id)
        return
    portal = integ.portal_id
    records = [RecordRef(record_type="deal", record_id=deal.record_id)]
    account = pair = None
    if deal.account_id:
        records.append(RecordRef(record_type="account", record_id=deal.account_id))
        account = await state.records.get(ctx.conn, (org, "account", deal.account_id))
        account = account if account is not None and not account.deleted else None
        pair = await state.pairs.get(ctx.conn, (org, portal, "account", deal.account_id))
    pending = rows.PendingCommand(uuid.uuid4(), org, "create_project", portal,
                                  {"records": [r.model_dump() for r in records], "trigger": "deal_won"})
    if not await state.claim_deal_project(ctx.conn, org, deal.record_id, pending):
        return
    account_data = {"name": account.name, **account.data} if account is not None else None
    draft = domain.project_from_mapping(integ.field_mapping, {"name": deal.name, **deal.data}, account_data)
    command_id = pending.command_id
    await emit_command(ctx, cmd.PmProjectCreate(
        command_id=command_id, portal_id=portal, name=draft.name, description=draft.description,
        start_date=draft.start_date, end_date=draft.end_date, custom_fields=draft.custom_fields,
        linked_records=records, client_company_ids=[pair.pm_id] if pair is not None else []),
        f"project:{command_id}", org)
    await ctx.emit(ProjectCreationRequested(command_id=command_id, portal_id=portal, trigger="deal_won", records=records),
                   entity_key=f"{org}:deal:{deal.record_id}", org_id=org, origin="hub")
    count_project_requested(ctx, "deal_won")
