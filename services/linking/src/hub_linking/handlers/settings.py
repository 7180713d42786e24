"""The integration's settings per CRM org (S3, S6, S7, S17, S20, S24).

- A request for an org whose integration is not enabled (other than enable itself) is refused with
  `integration_disabled`.
- Disabling keeps links stored but hidden (S7): they reappear when the same portal is enabled again, with no
  resync (an explicit hub.integration.resync runs matching again).
- Enabling or switching to another portal removes the old portal's links (linked=false events, S20).
- A refusal is an event (linking.request.refused), never a dead letter.
"""

from __future__ import annotations

from typing import Any

from hub_linking import domain, rows, storage
from hub_linking.handlers.common import (
    Refused, actor_who, emit_integration, emit_links, notify, now, portal_name, requests_handler,
)
from hub_linking.handlers.matching import run_matching
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event
from hub_schema.events import requests
from hub_schema.events.linking import ResyncRequested, ServiceKeyRotated, SyncStopped

router = Router()


async def _admin(ctx: HandlerContext, event: Event[Any]) -> domain.Actor:
    return await actor_who(ctx, event, domain.may_change_settings)


async def _paid_portal(ctx: HandlerContext, org: str, portal_id: str) -> rows.Portal:
    portal = await storage.get_portal(ctx.conn, org, portal_id)
    if portal is None:
        raise Refused("portal_unknown", f"the hub has not seen portal {portal_id} yet", {"portal_id": portal_id})
    if not portal.active:
        raise Refused("portal_inactive", f"portal {portal.name} is not active", {"portal_id": portal_id})
    if portal.plan == "free":
        raise Refused("plan_required", f"portal {portal.name} is on the free PM plan; the integration needs a "
                                       "paid PM plan", {"portal_id": portal_id, "plan": "free"})
    return portal


async def _enabled_on(ctx: HandlerContext, org: str, portal_id: str, disabled_reason: str) -> rows.Integration:
    current = await storage.get_integration(ctx.conn, org, lock=True)
    if current is None or not current.enabled:
        raise Refused("integration_disabled", disabled_reason)
    if current.portal_id != portal_id:
        raise Refused("stale_request", f"the integration uses portal {current.portal_id}, not {portal_id}")
    return current


async def _remove_portal_links(ctx: HandlerContext, org: str, portal_id: str) -> None:
    """S20: deactivating a portal removes its project links (each announced as linked=false)."""
    await emit_links(ctx, org, portal_id, await storage.active_links_of_portal(ctx.conn, org, portal_id),
                     linked=False, source="portal_switched")


@requests_handler(router, requests.IntegrationEnable)
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
    if current is not None and current.portal_id != p.portal_id:
        if current.enabled:
            raise Refused("use_switch_portal", f"the integration uses portal {current.portal_id}; switch portal to "
                                               "change it", {"current_portal_id": current.portal_id})
        previous = current.portal_id
        await _remove_portal_links(ctx, org, previous)
    await storage.save_integration(ctx.conn, org, state="enabled", portal_id=p.portal_id, field_mapping=mapping,
                                   deal_won_creates_project=p.deal_won_creates_project, enabled_by=actor.crm_user_id)
    current = await storage.get_integration(ctx.conn, org)
    assert current is not None
    # First enable of this portal: match clients to accounts (S21/S22). Re-enabling does not resync (S7).
    first_enable = p.portal_id not in current.matched_portals
    # The accepted set-up carries the permission profile: identity applies it from this event, never from the
    # raw request, so a refused enable changes no one's access (S3, S17).
    await emit_integration(ctx, org, actor.crm_user_id, previous, matching_pending=first_enable,
                           accepted_profile=p.permissions, profile_request_id=p.request_id)
    if first_enable:
        await run_matching(ctx, org, p.portal_id, actor)


@requests_handler(router, requests.IntegrationDisable)
async def on_disable(ctx: HandlerContext, event: Event[requests.IntegrationDisable]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    await _enabled_on(ctx, org, p.portal_id, "the integration is not enabled")
    await storage.disable_integration(ctx.conn, org)
    await emit_integration(ctx, org, actor.crm_user_id)
    at = now()
    await ctx.emit(SyncStopped(portal_id=p.portal_id, stopped_by=actor.crm_user_id, stopped_at=at),
                   entity_key=f"{org}:integration", origin="hub")
    await notify(ctx, org, actor, "sync_stopped", optional=True,
                 data={"portal_id": p.portal_id, "stopped_at": at.isoformat(),
                       **await portal_name(ctx, org, p.portal_id)})


@requests_handler(router, requests.IntegrationResync)
async def on_resync(ctx: HandlerContext, event: Event[requests.IntegrationResync]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    await _enabled_on(ctx, org, p.portal_id, "enable the integration before asking for a resync")
    await ctx.emit(ResyncRequested(request_id=p.request_id, portal_id=p.portal_id, requested_by=actor.crm_user_id),
                   entity_key=f"{org}:integration", origin="hub")
    await run_matching(ctx, org, p.portal_id, actor)


@requests_handler(router, requests.IntegrationSwitchPortal)
async def on_switch(ctx: HandlerContext, event: Event[requests.IntegrationSwitchPortal]) -> None:
    p = event.payload
    org = event.org_id
    actor = await _admin(ctx, event)
    await _enabled_on(ctx, org, p.current_portal_id, "the integration is not enabled; enable it with the new portal")
    await _paid_portal(ctx, org, p.new_portal_id)
    await _remove_portal_links(ctx, org, p.current_portal_id)
    await storage.switch_portal(ctx.conn, org, p.new_portal_id, actor.crm_user_id)
    await emit_integration(ctx, org, actor.crm_user_id, p.current_portal_id, matching_pending=True)
    await run_matching(ctx, org, p.new_portal_id, actor)


@requests_handler(router, requests.ServiceKeyGenerate)
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
