"""What identity's handlers share: registration with the batch state, and the events every aggregate publishes.

Every handler reads and changes identity's rows through `ctx.state` (an `IdentityState`, loaded for the whole
batch), never with SQL of its own. Its counters move only once the batch committed (`ctx.after_commit`), so a
retried or rolled-back batch does not count twice.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from hub_identity.domain import DEFAULT_PROFILE
from hub_identity.rows import PendingCommand
from hub_identity.state import IdentityState
from hub_platform import metrics
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events import requests
from hub_schema.events.common import PermissionProfile
from hub_schema.events.identity import CustomerMappingChanged, IdentityRequestRefused, UserAccessChanged

log = get_logger(__name__)

COMMANDS_SENT = metrics.Counter("hub_identity_pm_commands_total", "Commands identity sent to the PM side (committed)",
                                ["command"], registry=metrics.REGISTRY)
MAPPINGS_CHANGED = metrics.Counter("hub_identity_mapping_changes_total",
                                   "Account / contact mappings changed (committed)", ["kind", "state"],
                                   registry=metrics.REGISTRY)

StateHandler = Callable[[HandlerContext, Event[Any]], Awaitable[None]]


def on(router: Router, *payloads: type[Payload]) -> Callable[[StateHandler], StateHandler]:
    """Register a handler by payload class. Run by the platform, it finds the batch's state in `ctx.state`;
    called on its own (the bench's direct baseline, `bench.statements`), it loads and flushes a one-event state."""

    def register(fn: StateHandler) -> StateHandler:
        @functools.wraps(fn)
        async def run(ctx: HandlerContext, event: Event[Any]) -> None:
            if ctx.state is not None:
                await fn(ctx, event)
                return
            ctx.state = await IdentityState.load(ctx.conn, [event])
            await fn(ctx, event)
            await ctx.state.flush(ctx.conn)

        router.on(*payloads)(run)
        return fn

    return register


def state_of(ctx: HandlerContext) -> IdentityState:
    state: IdentityState = ctx.state
    return state


async def publish_access(ctx: HandlerContext, org_id: str, crm_user_id: str, effective_from: datetime,
                         profile: PermissionProfile | None = None) -> None:
    """Re-state everything a CRM user may do in the PM tool (one event per change)."""
    st = state_of(ctx)
    user = await st.crm_user(org_id, crm_user_id)
    if user is None:
        return
    revision = st.next_access_revision(user)
    if profile is None:
        latest = await st.latest_profile(org_id)
        profile = latest.profile if latest else DEFAULT_PROFILE
    await ctx.emit(UserAccessChanged(
        crm_user_id=crm_user_id, email=user.email_norm, name=user.name, locale=user.locale, time_zone=user.time_zone,
        active=user.active, is_admin=user.is_admin, portal_id=user.portal_id, portal_user_id=user.portal_user_id,
        profile=profile, effective_from=effective_from, revision=revision,
    ), entity_key=f"{org_id}:user:{crm_user_id}", org_id=org_id)


async def publish_mapping(ctx: HandlerContext, org_id: str, portal_id: str, kind: str, crm_id: str,
                          pm_id: str | None, state: str, pending_command_id: uuid.UUID | None = None) -> None:
    st = state_of(ctx)
    await st.mapping(org_id, portal_id, kind, crm_id)
    mapping = st.save_mapping(org_id, portal_id, kind, crm_id, pm_id, state, pending_command_id)
    await ctx.emit(CustomerMappingChanged(portal_id=portal_id, kind=kind, crm_id=crm_id, pm_id=pm_id,  # type: ignore[arg-type]
                                          state=state, revision=mapping.revision),  # type: ignore[arg-type]
                   entity_key=f"{org_id}:{kind}:{crm_id}", org_id=org_id)
    ctx.after_commit(MAPPINGS_CHANGED.labels(kind, state).inc)


async def send_command(ctx: HandlerContext, org_id: str, command: cmd.Command, entity_key: str,
                       subject_kind: str, subject_id: str, request_id: uuid.UUID | None = None) -> None:
    """Emit a PM command and remember it until its echo or rejection comes back."""
    event_type, _ = type(command).event_type_and_version()
    state_of(ctx).add_pending(PendingCommand(command.command_id, org_id, event_type, subject_kind, subject_id, request_id))
    await ctx.emit(command, entity_key=entity_key, org_id=org_id, origin="hub")
    ctx.after_commit(COMMANDS_SENT.labels(event_type).inc)


async def refuse(ctx: HandlerContext, org_id: str, request: requests.Request, reason_code: str, reason: str) -> None:
    event_type, _ = type(request).event_type_and_version()
    await ctx.emit(IdentityRequestRefused(request_id=request.request_id, request_type=event_type,
                                          acting_user_id=request.acting_user_id, reason_code=reason_code,
                                          reason=reason),
                   entity_key=f"{org_id}:request:{request.request_id}", org_id=org_id)


async def is_admin(ctx: HandlerContext, org_id: str, crm_user_id: str) -> bool:
    user = await state_of(ctx).crm_user(org_id, crm_user_id)
    return bool(user and user.active and user.is_admin)


async def unlink(ctx: HandlerContext, org: str, kind: str, *, crm_id: str | None = None, pm_id: str | None = None,
                 portal_id: str | None = None) -> None:
    """A deleted record's mapping turns `unlinked`; nothing is deleted on the other side (module doc)."""
    st = state_of(ctx)
    portal_id = portal_id or await st.portal_of(org)
    if portal_id is None:
        return
    if crm_id is not None:
        mapping = await st.mapping(org, portal_id, kind, crm_id)
    else:
        assert pm_id is not None
        mapping = await st.mapping_by_pm(org, portal_id, kind, pm_id)
    if mapping is not None and mapping.state != "unlinked":
        await publish_mapping(ctx, org, portal_id, kind, mapping.crm_id, mapping.pm_id, "unlinked")
