"""What the linking handlers share: refusals, link and notification events, the batch state, the request wrapper."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from hub_linking import domain, rows, storage
from hub_linking.state import LinkingState
from hub_linking.storage.links import LinkKey
from hub_platform import metrics
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events.common import PermissionProfile, RecordRef
from hub_schema.events.linking import IntegrationChanged, LinkChanged, LinkingRequestRefused
from hub_schema.events.notifications import MatchingReportPage, MatchingReportSummary, NotificationReportPage
from hub_schema.events.notifications import NotificationRequested, Recipient
from hub_schema.events.requests import FieldMapping

UTC = timezone.utc

PROJECTS_REQUESTED = metrics.Counter(
    "hub_linking_projects_requested_total", "pm.project.create commands sent, by what asked for them",
    ["trigger"], registry=metrics.REGISTRY,
)
LINKS_CHANGED = metrics.Counter(
    "hub_linking_links_changed_total", "Project ↔ record links made or removed, by source",
    ["source", "linked"], registry=metrics.REGISTRY,
)


def now() -> datetime:
    return datetime.now(UTC)


def state_of(ctx: HandlerContext) -> LinkingState:
    state = ctx.state
    assert isinstance(state, LinkingState), "the linking router loads a LinkingState for every event"
    return state


class Refused(Exception):
    """A domain refusal inside a request handler: becomes a linking.request.refused event."""

    def __init__(self, code: str, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.details = details or {}


async def refuse(ctx: HandlerContext, event: Event[Any], exc: Refused) -> None:
    p = event.payload
    ctx.log.info("request refused", reason_code=exc.code, request_type=event.event_type)
    await ctx.emit(LinkingRequestRefused(request_id=p.request_id, request_type=event.event_type,
                                         acting_user_id=p.acting_user_id, reason_code=exc.code,
                                         reason=exc.reason[:2000], details=exc.details),
                   entity_key=f"{event.org_id}:request:{p.request_id}", origin="hub")


def requests_handler(router: Router, payload: type[Payload]) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """Register a request handler: it runs on the database directly (the state written through first), in a
    savepoint, and its Refused exceptions become refusal events (the savepoint undoes what it had begun)."""

    def register(fn: Callable[[HandlerContext, Event[Any]], Awaitable[None]]) -> Any:
        async def run(ctx: HandlerContext, event: Event[Any]) -> None:
            try:
                async with ctx.savepoint():
                    await state_of(ctx).write_through(ctx.conn)
                    await fn(ctx, event)
            except Refused as exc:
                await refuse(ctx, event, exc)

        router.on(payload)(run)
        return fn

    return register


async def emit_links(ctx: HandlerContext, org_id: str, portal_id: str, links: Sequence[LinkKey], *, linked: bool,
                     source: str) -> int:
    """Link or unlink, announcing each link that changed (linking.link.changed); how many changed."""
    revisions = await storage.set_links(ctx.conn, org_id, portal_id, links, active=linked, source=source)
    changed = [link for link in dict.fromkeys(links) if link in revisions]
    for project_id, record_type, record_id in changed:
        await ctx.emit(LinkChanged(portal_id=portal_id, project_id=project_id,
                                   record=RecordRef(record_type=record_type, record_id=record_id),  # type: ignore[arg-type]
                                   linked=linked, revision=revisions[(project_id, record_type, record_id)]),
                       entity_key=f"{org_id}:project:{project_id}", org_id=org_id, origin="hub")
    if changed:
        ctx.after_commit(lambda: LINKS_CHANGED.labels(source, str(linked).lower()).inc(len(changed)))
    return len(changed)


async def emit_command(ctx: HandlerContext, payload: cmd.Command, entity_key: str, org_id: str) -> None:
    await ctx.emit(payload, entity_key=entity_key, org_id=org_id, origin="hub")


def count_project_requested(ctx: HandlerContext, trigger: str) -> None:
    """Counted once the batch committed (a retried batch does not count twice)."""
    ctx.after_commit(lambda: PROJECTS_REQUESTED.labels(trigger).inc())


async def notify(ctx: HandlerContext, org_id: str, actor: domain.Actor | None, kind: str, *, optional: bool,
                 data: dict[str, Any], report: MatchingReportSummary | None = None,
                 report_pages: Sequence[MatchingReportPage] = ()) -> None:
    """Ask for an e-mail; a matching report's rows go first as pages on the request's own key (same partition,
    so the notification service has them all when the request arrives)."""
    if actor is None or not actor.email:
        ctx.log.warning("no e-mail address for notification", kind=kind)
        return
    request_id = uuid.uuid5(ctx.event.event_id, kind)  # deterministic: a replay asks for the same e-mail
    for page in report_pages:
        await ctx.emit(NotificationReportPage(request_id=request_id, rows=page),
                       entity_key=f"{org_id}:{request_id}", org_id=org_id, origin="hub")
    await ctx.emit(NotificationRequested(
        request_id=request_id, kind=kind, optional=optional,  # type: ignore[arg-type]
        recipient=Recipient(user_id=actor.crm_user_id, email=actor.email, name=actor.name,
                            locale=actor.locale, time_zone=actor.time_zone),  # type: ignore[arg-type]
        data=data, matching_report=report),
        entity_key=f"{org_id}:{request_id}", org_id=org_id, origin="hub")


async def emit_integration(ctx: HandlerContext, org_id: str, changed_by: str, previous: str | None = None,
                           matching_pending: bool = False, accepted_profile: PermissionProfile | None = None,
                           profile_request_id: uuid.UUID | None = None) -> None:
    """linking.integration.changed from the stored settings; the permission profile travels only with the enable
    that was accepted with it (identity applies it from that event, S3/S17), it is not stored here."""
    integ = await storage.get_integration(ctx.conn, org_id)
    assert integ is not None
    enabled = integ.enabled
    payload = IntegrationChanged(
        state=integ.state, portal_id=integ.portal_id if enabled else None,  # type: ignore[arg-type]
        previous_portal_id=previous if previous is not None else (None if enabled else integ.portal_id),
        deal_won_creates_project=integ.deal_won_creates_project, changed_by=changed_by, changed_at=now(),
        revision=integ.revision,
        field_mapping=[FieldMapping.model_validate(m) for m in integ.field_mapping] if enabled else None,
        permissions=accepted_profile if enabled else None,
        matching_pending=matching_pending and enabled,
        profile_request_id=profile_request_id if enabled else None,
    )
    await ctx.emit(payload, entity_key=f"{org_id}:integration", org_id=org_id, origin="hub")


async def enabled_integration(ctx: HandlerContext, org: str) -> rows.Integration:
    integ = await storage.get_integration(ctx.conn, org)
    if integ is None or not integ.enabled:
        raise Refused("integration_disabled", "the integration is not enabled for this CRM org")
    return integ


async def actor_who(ctx: HandlerContext, event: Event[Any],
                    rule: Callable[[domain.Actor | None], tuple[bool, str, str]]) -> domain.Actor:
    """The acting user, if `rule` (domain.may_change_settings, domain.may_link_at_all) lets them."""
    user = await storage.get_actor(ctx.conn, event.org_id, event.payload.acting_user_id)
    actor = user.actor() if user is not None else None
    ok, code, reason = rule(actor)
    if not ok:
        raise Refused(code, reason)
    assert actor is not None
    return actor


async def portal_name(ctx: HandlerContext, org: str, portal_id: str) -> dict[str, str]:
    """`portal_name` for an e-mail, when the portal is known (people read names, not ids)."""
    portal = await storage.get_portal(ctx.conn, org, portal_id)
    return {"portal_name": portal.name} if portal is not None else {}
