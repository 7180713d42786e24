"""S18 user import (portal users or client users), refused as a whole on duplicate client e-mails (S19)."""

from __future__ import annotations

import uuid
from typing import Any

from hub_identity import domain
from hub_identity.domain import DEFAULT_PROFILE
from hub_identity.handlers.common import is_admin, on, refuse, send_command, state_of
from hub_identity.rows import CrmUser
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import requests
from hub_schema.events.identity import ImportCompleted, ImportedUser, SkippedUser
from hub_schema.events.notifications import NotificationRequested, Recipient
from hub_schema.names import normalise_email

log = get_logger(__name__)
router = Router()


def _recipient(actor: CrmUser) -> Recipient:
    return Recipient(user_id=actor.crm_user_id, email=actor.email, name=actor.name, locale=actor.locale,
                     time_zone=actor.time_zone)


async def refuse_duplicates(ctx: HandlerContext, org: str, portal_id: str, request: requests.Request,
                            duplicates: list[domain.Duplicate]) -> None:
    """S19: the whole request fails, the acting user is told, nothing is sent to the PM side."""
    st = state_of(ctx)
    reason = "client-user e-mails must be unique in the portal: " + "; ".join(d.describe() for d in duplicates)
    await refuse(ctx, org, request, "duplicate_email", reason[:2000])
    actor = await st.crm_user(org, request.acting_user_id)
    if actor is None:
        log.warning("duplicate e-mails: acting user unknown, no one to notify", acting_user_id=request.acting_user_id)
        return
    holder_ids = [d.existing_client_user_id for d in duplicates if d.existing_client_user_id]
    await st.need(st.client_users, [(org, portal_id, i) for i in holder_ids])
    holders = [u for i in holder_ids if (u := st.client_users.get((org, portal_id, i))) is not None]
    event_type, _ = type(request).event_type_and_version()
    data: dict[str, Any] = {
        "request_id": str(request.request_id), "request_type": event_type,
        "duplicates": [{"email": d.email, "records": [{"id": i, "name": n} for i, n in zip(d.record_ids, d.names)],
                        "existing_client_user_id": d.existing_client_user_id} for d in duplicates],
        # required by the duplicate_client_emails template (hub_schema.events.notifications contract)
        "email": ", ".join(d.email for d in duplicates), "reason": reason[:2000], "reason_code": "duplicate_email",
        "contacts": [{"id": i, "name": n} for d in duplicates for i, n in zip(d.record_ids, d.names)],
        # the template tells a user import apart from a project creation (the default)
        "cause": "user_import" if event_type == "hub.users.import" else "project_creation",
        # who already holds an address, by name (the mail names people, not ids)
        "taken_by": [u.name or u.email or u.id for u in holders],
    }
    notification_id = domain.notification_request_id(request.request_id, "duplicate_client_emails")
    await ctx.emit(NotificationRequested(
        request_id=notification_id, kind="duplicate_client_emails", optional=False, recipient=_recipient(actor),
        data=data,
    ), entity_key=f"{org}:{notification_id}", org_id=org)


@on(router, requests.UsersImport)
async def on_users_import(ctx: HandlerContext, event: Event[requests.UsersImport]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    if not await is_admin(ctx, org, p.acting_user_id):
        await refuse(ctx, org, p, "not_admin", "only CRM admins may import CRM users into the PM tool")
        return
    portal_id = await st.portal_of(org)
    if portal_id is None:
        await refuse(ctx, org, p, "integration_not_enabled", "the integration is not enabled for this CRM org")
        return
    await st.need(st.crm_users, [(org, i) for i in p.user_ids])
    users = {i: st.crm_users.get((org, i)) for i in p.user_ids}
    known = [u for u in users.values() if u is not None]
    emails = [u.email_norm for u in known]
    if p.import_as == "portal_user":
        await st.portal_users_with_emails(org, portal_id, emails)
        in_flight = await st.pending_for(org, "pm.portal_user.invite", [u.crm_user_id for u in known])
    else:
        holders = await st.client_users_with_emails(org, portal_id, emails)
        in_flight = await st.pending_for(org, "pm.client_user.create", [u.crm_user_id for u in known])
    facts: list[domain.UserFacts] = []
    for crm_user_id in p.user_ids:
        user = users[crm_user_id]
        if user is None:
            facts.append(domain.UserFacts(crm_user_id, None, None, active=False, known=False))
            continue
        if p.import_as == "portal_user":
            member = st.portal_user_with_email(org, portal_id, user.email_norm) is not None
        else:
            member = any(c.client_company_id == p.client_company_id for c in holders[user.email_norm])
        facts.append(domain.UserFacts(crm_user_id, user.email, user.name, user.active, already_member=member,
                                      pending=crm_user_id in in_flight))
    plan = domain.plan_import(facts, p.import_as)

    if p.import_as == "client_user":
        candidates = [domain.Candidate(u.crm_user_id, u.name or u.crm_user_id, u.email or "") for u in plan.add]
        taken = await st.client_users_with_emails(org, portal_id, [normalise_email(c.email) or "" for c in candidates])
        duplicates = domain.find_duplicate_emails(candidates, {e: us[0].id for e, us in taken.items() if us})
        if duplicates:
            await refuse_duplicates(ctx, org, portal_id, p, duplicates)
            return

    latest = await st.latest_profile(org)
    profile = latest.profile if latest else DEFAULT_PROFILE
    for u in plan.add:
        command_id = uuid.uuid4()
        assert u.email is not None and u.name is not None
        if p.import_as == "portal_user":
            command: cmd.Command = cmd.PmPortalUserInvite(
                command_id=command_id, portal_id=portal_id, crm_user_id=u.crm_user_id, email=u.email, name=u.name,
                role=profile.role, permissions=list(profile.permissions))
            key = f"portal_user:{org}:{u.crm_user_id}"
        else:
            assert p.client_company_id is not None
            command = cmd.PmClientUserCreate(
                command_id=command_id, portal_id=portal_id, client_company_id=p.client_company_id, email=u.email,
                name=u.name, crm_record_type="user", crm_record_id=u.crm_user_id)
            key = f"client_user:{org}:user:{u.crm_user_id}"
        await send_command(ctx, org, command, key, "user", u.crm_user_id, p.request_id)
    await ctx.emit(ImportCompleted(
        request_id=p.request_id, imported_as=p.import_as,
        added=[ImportedUser(crm_user_id=u.crm_user_id, email=normalise_email(u.email) or "") for u in plan.add],
        skipped=[SkippedUser(crm_user_id=i, reason_code=c, reason=r) for i, c, r in plan.skip],
    ), entity_key=f"{org}:import:{p.request_id}", org_id=org)
    await notify_import_outcome(ctx, org, p, plan, users)


async def notify_import_outcome(ctx: HandlerContext, org: str, request: requests.UsersImport, plan: domain.ImportPlan,
                                users: dict[str, CrmUser | None]) -> None:
    """S18: tell the admin who asked what was imported and who was not, with the reason (optional e-mail)."""
    actor = await state_of(ctx).crm_user(org, request.acting_user_id)
    if actor is None:
        return
    failed = []
    for crm_user_id, code, reason in plan.skip:
        user = users.get(crm_user_id)
        failed.append({"user_id": crm_user_id, "name": user.name if user else None,
                       "email": user.email if user else None, "reason_code": code, "reason": reason})
    data: dict[str, Any] = {
        "request_id": str(request.request_id), "import_as": request.import_as, "imported": len(plan.add),
        "imported_users": [{"user_id": u.crm_user_id, "name": u.name, "email": u.email} for u in plan.add],
        "failed": failed,
    }
    notification_id = domain.notification_request_id(request.request_id, "import_outcome")
    await ctx.emit(NotificationRequested(
        request_id=notification_id, kind="import_outcome", optional=True, recipient=_recipient(actor), data=data,
    ), entity_key=f"{org}:{notification_id}", org_id=org)
