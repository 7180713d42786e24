"""CRM users <-> portal users, matched by e-mail; every change re-states the user's access (S3, S7)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime

from hub_identity.handlers.common import on, publish_access, send_command, state_of
from hub_identity.rows import CrmUser
from hub_identity.state import IdentityState
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, pm
from hub_schema.names import normalise_email

log = get_logger(__name__)
router = Router()


async def rematch_users(st: IdentityState, org: str, users: Sequence[CrmUser]) -> list[CrmUser]:
    """Pair each CRM user with the current portal's user of the same e-mail; the users whose pairing changed."""
    portal_id = await st.portal_of(org)
    if portal_id is None:
        return []
    await st.portal_users_with_emails(org, portal_id, [u.email_norm for u in users])
    changed = []
    for user in users:
        portal_user = st.portal_user_with_email(org, portal_id, user.email_norm)
        target = (portal_id, portal_user.id if portal_user else None)
        if (user.portal_id, user.portal_user_id) != target:
            changed.append(st.crm_users.put(dataclasses.replace(user, portal_id=target[0], portal_user_id=target[1])))
    return changed


async def tell_pm_user_deactivated(ctx: HandlerContext, org: str, crm_user_id: str) -> None:
    st = state_of(ctx)
    user = await st.crm_user(org, crm_user_id)
    if user is None or user.portal_id is None or user.portal_user_id is None:
        return
    portal_user = await st.portal_user(org, user.portal_id, user.portal_user_id)
    if portal_user is None or portal_user.deleted or not portal_user.active:
        return
    await send_command(ctx, org, cmd.PmPortalUserDeactivate(
        command_id=uuid.uuid4(), portal_id=user.portal_id, user_id=user.portal_user_id, crm_user_id=crm_user_id,
    ), f"portal_user:{user.portal_user_id}", "user", crm_user_id)


@on(router, crm.CrmUserUpserted)
async def on_crm_user(ctx: HandlerContext, event: Event[crm.CrmUserUpserted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    before = await st.crm_user(org, p.id)
    user = await st.apply(st.crm_users, p.version, org_id=org, crm_user_id=p.id, email=p.email,
                          email_norm=normalise_email(p.email), name=p.name, locale=p.locale, time_zone=p.time_zone,
                          active=p.active, is_admin=p.is_admin, modified_at=p.modified_at)
    if user is None:
        log.info("stale crm user ignored", crm_user_id=p.id, version=p.version)
        return
    await rematch_users(st, org, [user])
    if before is not None and before.active and not p.active:
        await tell_pm_user_deactivated(ctx, org, p.id)
    await publish_access(ctx, org, p.id, p.modified_at)


@on(router, crm.CrmUserDeactivated)
async def on_crm_user_deactivated(ctx: HandlerContext, event: Event[crm.CrmUserDeactivated]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    user = await st.crm_user(org, p.id)
    if user is None:
        log.warning("deactivation of an unknown crm user ignored", crm_user_id=p.id)
        return
    if user.version >= p.version:
        log.info("stale crm user deactivation ignored", crm_user_id=p.id, version=p.version)
        return
    st.crm_users.put(dataclasses.replace(user, active=False, version=p.version, modified_at=p.modified_at))
    await tell_pm_user_deactivated(ctx, org, p.id)
    await publish_access(ctx, org, p.id, p.modified_at)


async def _portal_user_changed(ctx: HandlerContext, org: str, portal_id: str, user_id: str, email_norm: str | None,
                               when: datetime) -> None:
    st = state_of(ctx)
    if await st.portal_of(org) != portal_id:
        return
    for user in await rematch_users(st, org, await st.crm_users_touching(org, user_id, email_norm)):
        await publish_access(ctx, org, user.crm_user_id, when)


@on(router, pm.PmPortalUserUpserted)
async def on_portal_user(ctx: HandlerContext, event: Event[pm.PmPortalUserUpserted]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    email_norm = normalise_email(p.email)
    if await st.apply(st.portal_users, p.version, org_id=org, portal_id=p.portal_id, id=p.id, email=p.email,
                      email_norm=email_norm, name=p.name, role=p.role, active=p.active, deleted=False) is None:
        return
    await st.take_pending(org, p.command_id)  # the echo of an invite: the e-mail match pairs it
    await _portal_user_changed(ctx, org, p.portal_id, p.id, email_norm, p.modified_at)


@on(router, pm.PmPortalUserRemoved)
async def on_portal_user_removed(ctx: HandlerContext, event: Event[pm.PmPortalUserRemoved]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if await st.apply(st.portal_users, p.version, org_id=org, portal_id=p.portal_id, id=p.id,
                      deleted=True, active=False) is not None:
        await _portal_user_changed(ctx, org, p.portal_id, p.id, None, p.modified_at)
