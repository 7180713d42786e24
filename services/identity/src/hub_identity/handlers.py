"""Identity's event handlers: users, customers (S13), imports (S18), permission profiles (S3, S23), S19.

Decisions a reader needs to know (deliberate, tested where they matter):

- Tenancy: the envelope's `org_id` is the CRM org for every event, PM ingest included
  (the connector knows which org a portal is integrated with). PM records of a portal
  other than the org's current one are stored but not paired.
- Unknown org / integration not enabled: CRM users are still kept and their
  `identity.user_access.changed` published (linking needs "is this user an admin"
  before anything is enabled); nothing is sent to the PM side and customers are only
  stored until `linking.integration.changed` says enabled with a portal. Disabling
  keeps the last mapping (S7: users keep access); enabling (or switching portal)
  re-matches every CRM user against that portal's users by e-mail.
- Stale / repeated upstream events: each record keeps the upstream `version` it was
  applied at; an event whose version is not newer changes nothing and emits nothing.
- Deletes: a deleted account / contact (CRM) or client company / client user (PM)
  turns its mapping to `unlinked` and deletes nothing on the other side (projects may
  hang off the client company; there is no delete command). An unlinked pair is not
  re-created on its own: someone removed it on purpose.
- CRM → PM: a new account becomes a client company (`pm.client_company.create`)
  unless an unpaired client company of the same name (trimmed, case-insensitive)
  exists, which is paired instead; account renames go as `pm.client_company.update`.
  A contact becomes a client user of its account's company once that company is
  paired; contact changes go as `pm.client_user.update`.
  PM → CRM: the contract has no CRM command for accounts / contacts, so a client
  company / client user created in the PM tool is paired with an unpaired account of
  the same name / a contact of the paired account with the same e-mail, when there is one.
- A mapping created by a command is `pending` until the PM echo carrying that
  `command_id` arrives (then `linked`), or `unlinked` if the PM side rejects it.
- S19 in automatic sync (no acting user to tell): an account's contacts are created as
  client users all together or not at all when e-mails collide; the collision is logged.
- The initial profile comes with the set-up (S3), but identity never acts on the raw
  `hub.integration.enable`: linking decides it (admin, plan S17, field mapping), and only the
  `linking.integration.changed` that accepts it (`profile_request_id` set) applies its
  permissions. A refused enable therefore changes no profile and no one's access.
- Accounts that existed before the enable (S13 with S21/S22): linking owns client <-> account
  matching (normalised names, its own customer_pairs) and reports it as
  `linking.matching.page` events (rows cut to fit a message) and then `linking.matching.completed`
  (counts). Identity adopts that result instead of matching again:
  (1) every matched pair becomes a `linked` account mapping (identity.customer_mapping.changed;
  no company is created for it) and the account's contacts become client users of the matched
  company (S19: an e-mail collision creates none of them, as in every automatic sync);
  (2) every live account with no mapping row in the portal then goes the way of a new account
  (pair with the unique unpaired client company of the same name, else `pm.client_company.create`),
  except that a client linking reported `ambiguous` is not paired by name: an account named
  like it waits (the admin has the report; editing the account or a resync settles it).
  No duplicate company while matching runs: linking sets `matching_pending` on the
  `linking.integration.changed` that starts matching (enable of a portal never matched,
  switch) and sends the result on the same key, so identity sees them in order. While the
  org's matching is pending, a new account is only stored and PM-side name pairing waits;
  the matching result then adopts or creates it. An enable without matching (re-enable)
  syncs the unmapped accounts at once. If a create was already in flight when a matching
  result pairs its account (a resync racing a new account), the matched pair wins and the
  created company's echo is not paired (logged), so the account keeps one company.
- S18: the admin who asked for an import gets the optional `import_outcome` e-mail (what was
  imported, who was not and why); a refused import (S19 duplicates) gets
  `duplicate_client_emails` with `cause: "user_import"` instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Any

import asyncpg

from hub_identity import domain, storage
from hub_identity.domain import DEFAULT_PROFILE, normalise_email
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, linking, pm, requests
from hub_schema.events.common import PermissionProfile
from hub_schema.events.identity import (
    CustomerMappingChanged,
    IdentityRequestRefused,
    ImportCompleted,
    ImportedUser,
    PermissionProfileChanged,
    SkippedUser,
    UserAccessChanged,
)
from hub_schema.events.notifications import NotificationRequested, Recipient

UTC = timezone.utc
log = get_logger(__name__)
router = Router()


def _now() -> datetime:
    return datetime.now(UTC)


# --- publishing helpers ---------------------------------------------------------------------------


async def _current_profile(conn: asyncpg.Connection, org_id: str) -> PermissionProfile:
    latest = await storage.latest_profile(conn, org_id)
    return latest.profile if latest else DEFAULT_PROFILE


async def publish_access(ctx: HandlerContext, org_id: str, crm_user_id: str, effective_from: datetime,
                         profile: PermissionProfile | None = None) -> None:
    """Re-state everything a CRM user may do in the PM tool (one event per change)."""
    conn = ctx.conn
    user = await storage.get_crm_user(conn, org_id, crm_user_id)
    if user is None:
        return
    revision = await storage.next_access_revision(conn, org_id, crm_user_id)
    await ctx.emit(UserAccessChanged(
        crm_user_id=crm_user_id, email=user["email_norm"], name=user["name"], locale=user["locale"],
        time_zone=user["time_zone"],
        active=user["active"], is_admin=user["is_admin"], portal_id=user["portal_id"],
        portal_user_id=user["portal_user_id"], profile=profile or await _current_profile(conn, org_id),
        effective_from=effective_from, revision=revision,
    ), entity_key=f"{org_id}:user:{crm_user_id}", org_id=org_id)


async def publish_mapping(ctx: HandlerContext, org_id: str, portal_id: str, kind: str, crm_id: str,
                          pm_id: str | None, state: str, pending_command_id: uuid.UUID | None = None) -> None:
    revision = await storage.save_mapping(ctx.conn, org_id, portal_id, kind, crm_id, pm_id, state, pending_command_id)
    await ctx.emit(CustomerMappingChanged(portal_id=portal_id, kind=kind, crm_id=crm_id, pm_id=pm_id,  # type: ignore[arg-type]
                                          state=state, revision=revision),  # type: ignore[arg-type]
                   entity_key=f"{org_id}:{kind}:{crm_id}", org_id=org_id)


async def send_command(ctx: HandlerContext, org_id: str, command: cmd.Command, entity_key: str,
                       subject_kind: str, subject_id: str, request_id: uuid.UUID | None = None) -> None:
    """Emit a PM command and remember it until its echo or rejection comes back."""
    event_type, _ = type(command).event_type_and_version()
    await storage.add_pending(ctx.conn, command.command_id, org_id, event_type, subject_kind, subject_id, request_id)
    await ctx.emit(command, entity_key=entity_key, org_id=org_id, origin="hub")


async def refuse(ctx: HandlerContext, org_id: str, request: requests.Request, reason_code: str, reason: str) -> None:
    event_type, _ = type(request).event_type_and_version()
    await ctx.emit(IdentityRequestRefused(request_id=request.request_id, request_type=event_type,
                                          acting_user_id=request.acting_user_id, reason_code=reason_code,
                                          reason=reason),
                   entity_key=f"{org_id}:request:{request.request_id}", org_id=org_id)


async def _is_admin(conn: asyncpg.Connection, org_id: str, crm_user_id: str) -> bool:
    user = await storage.get_crm_user(conn, org_id, crm_user_id)
    return bool(user and user["active"] and user["is_admin"])


# --- users --------------------------------------------------------------------------------------


async def rematch_user(conn: asyncpg.Connection, org_id: str, crm_user_id: str) -> bool:
    """Pair the CRM user with the current portal's user of the same e-mail; True if the pairing changed."""
    portal_id = await storage.portal_of(conn, org_id)
    user = await storage.get_crm_user(conn, org_id, crm_user_id)
    if portal_id is None or user is None:
        return False
    portal_user = await storage.portal_user_with_email(conn, org_id, portal_id, user["email_norm"])
    target = (portal_id, portal_user["id"] if portal_user else None)
    if (user["portal_id"], user["portal_user_id"]) == target:
        return False
    await storage.set_user_portal(conn, org_id, crm_user_id, *target)
    return True


async def tell_pm_user_deactivated(ctx: HandlerContext, org_id: str, crm_user_id: str) -> None:
    user = await storage.get_crm_user(ctx.conn, org_id, crm_user_id)
    if user is None or user["portal_id"] is None or user["portal_user_id"] is None:
        return
    portal_user = await storage.get_portal_user(ctx.conn, org_id, user["portal_id"], user["portal_user_id"])
    if portal_user is None or portal_user["deleted"] or not portal_user["active"]:
        return
    await send_command(ctx, org_id, cmd.PmPortalUserDeactivate(
        command_id=uuid.uuid4(), portal_id=user["portal_id"], user_id=user["portal_user_id"], crm_user_id=crm_user_id,
    ), f"portal_user:{user['portal_user_id']}", "user", crm_user_id)


@router.on("crm.user.upserted")
async def on_crm_user(ctx: HandlerContext, event: Event[crm.CrmUserUpserted]) -> None:
    p, org = event.payload, event.org_id
    before = await storage.get_crm_user(ctx.conn, org, p.id)
    applied = await storage.apply_versioned(
        ctx.conn, "crm_users", {"org_id": org, "crm_user_id": p.id},
        {"email": p.email, "email_norm": normalise_email(p.email), "name": p.name, "locale": p.locale,
         "time_zone": p.time_zone, "active": p.active, "is_admin": p.is_admin, "modified_at": p.modified_at}, p.version)
    if not applied:
        log.info("stale crm user ignored", crm_user_id=p.id, version=p.version)
        return
    await rematch_user(ctx.conn, org, p.id)
    if before is not None and before["active"] and not p.active:
        await tell_pm_user_deactivated(ctx, org, p.id)
    await publish_access(ctx, org, p.id, p.modified_at)


@router.on("crm.user.deactivated")
async def on_crm_user_deactivated(ctx: HandlerContext, event: Event[crm.CrmUserDeactivated]) -> None:
    p, org = event.payload, event.org_id
    if await storage.get_crm_user(ctx.conn, org, p.id) is None:
        log.warning("deactivation of an unknown crm user ignored", crm_user_id=p.id)
        return
    if not await storage.deactivate_crm_user(ctx.conn, org, p.id, p.version, p.modified_at):
        log.info("stale crm user deactivation ignored", crm_user_id=p.id, version=p.version)
        return
    await tell_pm_user_deactivated(ctx, org, p.id)
    await publish_access(ctx, org, p.id, p.modified_at)


async def _portal_user_changed(ctx: HandlerContext, org: str, portal_id: str, user_id: str, email_norm: str | None,
                               when: datetime) -> None:
    if await storage.portal_of(ctx.conn, org) != portal_id:
        return
    affected = {r["crm_user_id"] for r in await ctx.conn.fetch(
        "SELECT crm_user_id FROM crm_users WHERE org_id = $1 AND (portal_user_id = $2 OR email_norm = $3)",
        org, user_id, email_norm)}
    for crm_user_id in sorted(affected):
        if await rematch_user(ctx.conn, org, crm_user_id):
            await publish_access(ctx, org, crm_user_id, when)


@router.on("pm.portal_user.upserted")
async def on_portal_user(ctx: HandlerContext, event: Event[pm.PmPortalUserUpserted]) -> None:
    p, org = event.payload, event.org_id
    email_norm = normalise_email(p.email)
    applied = await storage.apply_versioned(
        ctx.conn, "portal_users", {"org_id": org, "portal_id": p.portal_id, "id": p.id},
        {"email": p.email, "email_norm": email_norm, "name": p.name, "role": p.role, "active": p.active,
         "deleted": False}, p.version)
    if not applied:
        return
    await storage.take_pending(ctx.conn, org, p.command_id)  # the echo of an invite: the e-mail match pairs it
    await _portal_user_changed(ctx, org, p.portal_id, p.id, email_norm, p.modified_at)


@router.on("pm.portal_user.removed")
async def on_portal_user_removed(ctx: HandlerContext, event: Event[pm.PmPortalUserRemoved]) -> None:
    p, org = event.payload, event.org_id
    if await storage.apply_versioned(ctx.conn, "portal_users", {"org_id": org, "portal_id": p.portal_id, "id": p.id},
                                     {"deleted": True, "active": False}, p.version):
        await _portal_user_changed(ctx, org, p.portal_id, p.id, None, p.modified_at)


# --- integration state and permission profiles ---------------------------------------------------


@router.on("linking.integration.changed")
async def on_integration_changed(ctx: HandlerContext, event: Event[linking.IntegrationChanged]) -> None:
    p, org = event.payload, event.org_id
    pending = p.state == "enabled" and p.matching_pending
    if not await storage.apply_integration(ctx.conn, org, p.state, p.portal_id, p.revision, pending):
        return
    if p.profile_request_id is not None and p.permissions is not None:
        await apply_accepted_profile(ctx, org, p.permissions, p.changed_by, p.profile_request_id)
    if p.state != "enabled" or p.portal_id is None:
        return
    for user in await storage.crm_users_of_org(ctx.conn, org):
        if await rematch_user(ctx.conn, org, user["crm_user_id"]):
            await publish_access(ctx, org, user["crm_user_id"], p.changed_at)
    if not pending:  # no matching will follow: accounts stored meanwhile sync now (S13)
        await sync_unmapped_accounts(ctx, org, p.portal_id)


@router.on("linking.matching.page")
async def on_matching_page(ctx: HandlerContext, event: Event[linking.MatchingPage]) -> None:
    """Adopt one page of linking's client <-> account pairs; note the ambiguous clients for the end (module doc)."""
    p, org, conn = event.payload, event.org_id, ctx.conn
    portal_id = await storage.portal_of(conn, org)
    if portal_id is None or portal_id != p.portal_id:
        log.info("matching rows for a portal not in use ignored", portal_id=p.portal_id, current=portal_id)
        return
    for m in p.rows.matched:
        await adopt_matched_pair(ctx, org, portal_id, m.account_id, m.client_company_id)
    ambiguous = [u.client_company_id for u in p.rows.unmatched if u.reason_code == "ambiguous"]
    if ambiguous:
        await conn.execute(
            "INSERT INTO matching_ambiguous (org_id, report_id, client_company_id) SELECT $1, $2, unnest($3::text[]) "
            "ON CONFLICT DO NOTHING", org, p.report_id, ambiguous)


@router.on("linking.matching.completed")
async def on_matching_completed(ctx: HandlerContext, event: Event[linking.MatchingCompleted]) -> None:
    """The pages (adopted already, same key, in order) are all in: sync every account still unmapped."""
    report, org, conn = event.payload.report, event.org_id, ctx.conn
    ambiguous = {r["client_company_id"] for r in await conn.fetch(
        "DELETE FROM matching_ambiguous WHERE org_id = $1 AND report_id = $2 RETURNING client_company_id",
        org, report.report_id)}
    portal_id = await storage.portal_of(conn, org)
    if portal_id is None or portal_id != report.portal_id:
        log.info("matching result for a portal not in use ignored", portal_id=report.portal_id, current=portal_id)
        return
    await storage.set_matching_pending(conn, org, False)
    await sync_unmapped_accounts(ctx, org, portal_id, ambiguous)


async def change_profile(ctx: HandlerContext, org: str, profile: PermissionProfile, requested: datetime | None,
                         changed_by: str, request_id: uuid.UUID) -> None:
    effective_from = domain.profile_effective_from(requested, _now())
    revision = await storage.add_profile(ctx.conn, org, profile, effective_from, changed_by, request_id)
    if revision is None:
        return  # this request was applied already
    await ctx.emit(PermissionProfileChanged(profile=profile, changed_by=changed_by, effective_from=effective_from,
                                            revision=revision), entity_key=f"{org}:profile", org_id=org)
    for user in await storage.crm_users_of_org(ctx.conn, org):
        await publish_access(ctx, org, user["crm_user_id"], effective_from, profile)


@router.on("hub.permissions.change")
async def on_permissions_change(ctx: HandlerContext, event: Event[requests.PermissionsChange]) -> None:
    p, org = event.payload, event.org_id
    if not await _is_admin(ctx.conn, org, p.acting_user_id):
        await refuse(ctx, org, p, "not_admin", "only CRM admins may change the permissions CRM users get in the PM tool")
        return
    await change_profile(ctx, org, p.permissions, p.effective_from, p.acting_user_id, p.request_id)


async def apply_accepted_profile(ctx: HandlerContext, org: str, profile: PermissionProfile, changed_by: str,
                                 request_id: uuid.UUID) -> None:
    """The profile of a set-up linking accepted (S3); the raw hub.integration.enable is not identity's to act on,
    since linking may refuse it (S17 plan, field mapping, not admin) and a refused save must change nothing."""
    latest = await storage.latest_profile(ctx.conn, org)
    if latest is not None and latest.profile == profile:
        return
    await change_profile(ctx, org, profile, None, changed_by, request_id)


# --- S18 import and S19 duplicate e-mails ---------------------------------------------------------


async def refuse_duplicates(ctx: HandlerContext, org: str, request: requests.Request,
                            duplicates: list[domain.Duplicate]) -> None:
    """S19: the whole request fails, the acting user is told, nothing is sent to the PM side."""
    reason = "client-user e-mails must be unique in the portal: " + "; ".join(d.describe() for d in duplicates)
    await refuse(ctx, org, request, "duplicate_email", reason[:2000])
    actor = await storage.get_crm_user(ctx.conn, org, request.acting_user_id)
    if actor is None:
        log.warning("duplicate e-mails: acting user unknown, no one to notify", acting_user_id=request.acting_user_id)
        return
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
        "taken_by": await storage.client_user_names(
            ctx.conn, org, [d.existing_client_user_id for d in duplicates if d.existing_client_user_id]),
    }
    notification_id = domain.notification_request_id(request.request_id, "duplicate_client_emails")
    await ctx.emit(NotificationRequested(
        request_id=notification_id, kind="duplicate_client_emails", optional=False,
        recipient=Recipient(user_id=actor["crm_user_id"], email=actor["email"], name=actor["name"],
                            locale=actor["locale"], time_zone=actor["time_zone"]),
        data=data,
    ), entity_key=f"{org}:{notification_id}", org_id=org)


@router.on("hub.users.import")
async def on_users_import(ctx: HandlerContext, event: Event[requests.UsersImport]) -> None:
    p, org, conn = event.payload, event.org_id, ctx.conn
    if not await _is_admin(conn, org, p.acting_user_id):
        await refuse(ctx, org, p, "not_admin", "only CRM admins may import CRM users into the PM tool")
        return
    portal_id = await storage.portal_of(conn, org)
    if portal_id is None:
        await refuse(ctx, org, p, "integration_not_enabled", "the integration is not enabled for this CRM org")
        return
    facts: list[domain.UserFacts] = []
    rows: dict[str, asyncpg.Record] = {}
    for crm_user_id in p.user_ids:
        row = await storage.get_crm_user(conn, org, crm_user_id)
        if row is None:
            facts.append(domain.UserFacts(crm_user_id, None, None, active=False, known=False))
            continue
        rows[crm_user_id] = row
        if p.import_as == "portal_user":
            member = await storage.portal_user_with_email(conn, org, portal_id, row["email_norm"]) is not None
            pending = await storage.pending_for(conn, org, "pm.portal_user.invite", crm_user_id) is not None
        else:
            same = await storage.client_users_with_email(conn, org, portal_id, row["email_norm"])
            member = any(c["client_company_id"] == p.client_company_id for c in same)
            pending = await storage.pending_for(conn, org, "pm.client_user.create", crm_user_id) is not None
        facts.append(domain.UserFacts(crm_user_id, row["email"], row["name"], row["active"],
                                      already_member=member, pending=pending))
    plan = domain.plan_import(facts, p.import_as)

    if p.import_as == "client_user":
        candidates = [domain.Candidate(u.crm_user_id, u.name or u.crm_user_id, u.email or "") for u in plan.add]
        taken = await storage.taken_client_emails(conn, org, portal_id,
                                                  [normalise_email(c.email) or "" for c in candidates])
        duplicates = domain.find_duplicate_emails(candidates, {e: r["id"] for e, r in taken.items()})
        if duplicates:
            await refuse_duplicates(ctx, org, p, duplicates)
            return

    profile = await _current_profile(conn, org)
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
    await notify_import_outcome(ctx, org, p, plan, rows)


async def notify_import_outcome(ctx: HandlerContext, org: str, request: requests.UsersImport, plan: domain.ImportPlan,
                                rows: dict[str, asyncpg.Record]) -> None:
    """S18: tell the admin who asked what was imported and who was not, with the reason (optional e-mail)."""
    actor = await storage.get_crm_user(ctx.conn, org, request.acting_user_id)
    if actor is None:
        return
    failed = []
    for crm_user_id, code, reason in plan.skip:
        row = rows.get(crm_user_id)
        failed.append({"user_id": crm_user_id, "name": row["name"] if row else None,
                       "email": row["email"] if row else None, "reason_code": code, "reason": reason})
    data: dict[str, Any] = {
        "request_id": str(request.request_id), "import_as": request.import_as, "imported": len(plan.add),
        "imported_users": [{"user_id": u.crm_user_id, "name": u.name, "email": u.email} for u in plan.add],
        "failed": failed,
    }
    notification_id = domain.notification_request_id(request.request_id, "import_outcome")
    await ctx.emit(NotificationRequested(
        request_id=notification_id, kind="import_outcome", optional=True,
        recipient=Recipient(user_id=actor["crm_user_id"], email=actor["email"], name=actor["name"],
                            locale=actor["locale"], time_zone=actor["time_zone"]),
        data=data,
    ), entity_key=f"{org}:{notification_id}", org_id=org)


# --- customers (S13) ---------------------------------------------------------------------------------


async def sync_new_account(ctx: HandlerContext, org: str, portal_id: str, account_id: str, name: str,
                           not_by_name: Collection[str] = ()) -> None:
    """An account with no mapping: pair it with the unique unpaired company of its name, else create one (S13).

    `not_by_name`: client companies that must not be paired by name (linking found them ambiguous);
    an account named like one of them waits instead of getting a second company of that name.
    """
    conn = ctx.conn
    same_name = await storage.unmapped_companies_named(conn, org, portal_id, name)
    matches = [c for c in same_name if c["id"] not in not_by_name]
    if len(matches) == 1:
        await publish_mapping(ctx, org, portal_id, "account", account_id, matches[0]["id"], "linked")
        await sync_account_contacts(ctx, org, portal_id, account_id)
        return
    if len(same_name) > len(matches):
        log.info("account named like an ambiguous client waits", account_id=account_id)
        return
    command = cmd.PmClientCompanyCreate(command_id=uuid.uuid4(), portal_id=portal_id, name=name,
                                        crm_account_id=account_id)
    await send_command(ctx, org, command, f"client_company:{org}:{account_id}", "account", account_id)
    await publish_mapping(ctx, org, portal_id, "account", account_id, None, "pending", command.command_id)


async def sync_unmapped_accounts(ctx: HandlerContext, org: str, portal_id: str,
                                 not_by_name: Collection[str] = ()) -> None:
    """Every live account with no mapping row yet goes the way of a new account (existed before the enable)."""
    for account in await storage.unmapped_accounts(ctx.conn, org, portal_id):
        await sync_new_account(ctx, org, portal_id, account["id"], account["name"], not_by_name)


async def adopt_matched_pair(ctx: HandlerContext, org: str, portal_id: str, account_id: str, company_id: str) -> None:
    """Linking matched this account with this client company (S21/S22): identity pairs them the same way."""
    conn = ctx.conn
    mapping = await storage.get_mapping(conn, org, portal_id, "account", account_id)
    if mapping is not None and mapping["state"] == "linked":
        if mapping["pm_id"] != company_id:
            log.warning("matched account already paired with another client company; kept",
                        account_id=account_id, paired=mapping["pm_id"], matched=company_id)
            return
    else:
        other = await storage.mapping_by_pm(conn, org, portal_id, "account", company_id)
        if other is not None and other["crm_id"] != account_id:
            log.warning("matched client company already paired with another account; kept",
                        client_company_id=company_id, paired=other["crm_id"], matched=account_id)
            return
        if mapping is not None and mapping["state"] == "pending":
            log.warning("matching paired an account whose client company was being created; the match wins",
                        account_id=account_id, client_company_id=company_id)
        await publish_mapping(ctx, org, portal_id, "account", account_id, company_id, "linked")
    await sync_account_contacts(ctx, org, portal_id, account_id)


@router.on("crm.account.upserted")
async def on_account(ctx: HandlerContext, event: Event[crm.CrmAccountUpserted]) -> None:
    p, org, conn = event.payload, event.org_id, ctx.conn
    if not await storage.apply_versioned(conn, "accounts", {"org_id": org, "id": p.id},
                                         {"name": p.name, "deleted": False}, p.version):
        return
    portal_id = await storage.portal_of(conn, org)
    if portal_id is None:
        return
    mapping = await storage.get_mapping(conn, org, portal_id, "account", p.id)
    if mapping is None:
        if await storage.matching_pending(conn, org):
            log.info("account waits for the matching result", account_id=p.id)
            return
        await sync_new_account(ctx, org, portal_id, p.id, p.name)
    elif mapping["state"] == "linked":
        company = await storage.get_row(conn, "client_companies", org_id=org, portal_id=portal_id, id=mapping["pm_id"])
        if company is not None and not company["deleted"] and company["name"] != p.name:
            await send_command(ctx, org, cmd.PmClientCompanyUpdate(
                command_id=uuid.uuid4(), portal_id=portal_id, client_company_id=mapping["pm_id"], name=p.name,
            ), f"client_company:{org}:{p.id}", "account", p.id)


@router.on("crm.account.deleted")
async def on_account_deleted(ctx: HandlerContext, event: Event[crm.CrmAccountDeleted]) -> None:
    p, org = event.payload, event.org_id
    if not await storage.apply_versioned(ctx.conn, "accounts", {"org_id": org, "id": p.id}, {"deleted": True}, p.version):
        return
    await _unlink(ctx, org, "account", crm_id=p.id)


async def _unlink(ctx: HandlerContext, org: str, kind: str, *, crm_id: str | None = None, pm_id: str | None = None,
                  portal_id: str | None = None) -> None:
    portal_id = portal_id or await storage.portal_of(ctx.conn, org)
    if portal_id is None:
        return
    if crm_id is not None:
        mapping = await storage.get_mapping(ctx.conn, org, portal_id, kind, crm_id)
    else:
        assert pm_id is not None
        mapping = await storage.mapping_by_pm(ctx.conn, org, portal_id, kind, pm_id)
    if mapping is not None and mapping["state"] != "unlinked":
        await publish_mapping(ctx, org, portal_id, kind, mapping["crm_id"], mapping["pm_id"], "unlinked")


def _client_user_command(portal_id: str, company_id: str, contact: asyncpg.Record) -> cmd.PmClientUserCreate:
    return cmd.PmClientUserCreate(command_id=uuid.uuid4(), portal_id=portal_id, client_company_id=company_id,
                                  email=contact["email"], name=contact["name"], crm_record_type="contact",
                                  crm_record_id=contact["id"])


async def _create_client_users(ctx: HandlerContext, org: str, portal_id: str, company_id: str,
                               contacts: list[asyncpg.Record]) -> None:
    """Pair or create client users for unpaired contacts, all or nothing when e-mails collide (S19)."""
    conn = ctx.conn
    to_create: list[asyncpg.Record] = []
    for contact in contacts:
        if contact["email_norm"] is None or await storage.get_mapping(conn, org, portal_id, "contact", contact["id"]):
            continue
        same = [c for c in await storage.client_users_with_email(conn, org, portal_id, contact["email_norm"])
                if c["client_company_id"] == company_id
                and await storage.mapping_by_pm(conn, org, portal_id, "contact", c["id"]) is None]
        if same:  # already there in the PM tool: pair, do not create twice
            await publish_mapping(ctx, org, portal_id, "contact", contact["id"], same[0]["id"], "linked")
        else:
            to_create.append(contact)
    if not to_create:
        return
    candidates = [domain.Candidate(c["id"], c["name"], c["email"]) for c in to_create]
    taken = await storage.taken_client_emails(conn, org, portal_id, [c["email_norm"] for c in to_create])
    claimed = {r["email_norm"]: r["crm_id"] for r in await conn.fetch(
        "SELECT c.email_norm, m.crm_id FROM customer_mappings m JOIN contacts c ON c.org_id = m.org_id AND c.id = m.crm_id "
        "WHERE m.org_id = $1 AND m.portal_id = $2 AND m.kind = 'contact' AND m.state = 'pending' "
        "AND c.email_norm = ANY($3)", org, portal_id, [c["email_norm"] for c in to_create])}
    duplicates = domain.find_duplicate_emails(candidates, {**{e: r["id"] for e, r in taken.items()}, **claimed})
    if duplicates:
        log.warning("contacts not synced as client users: duplicate e-mails",
                    contacts=[list(d.record_ids) for d in duplicates])
        return
    for contact in to_create:
        command = _client_user_command(portal_id, company_id, contact)
        await send_command(ctx, org, command, f"client_user:{org}:{contact['id']}", "contact", contact["id"])
        await publish_mapping(ctx, org, portal_id, "contact", contact["id"], None, "pending", command.command_id)


async def sync_account_contacts(ctx: HandlerContext, org: str, portal_id: str, account_id: str) -> None:
    mapping = await storage.get_mapping(ctx.conn, org, portal_id, "account", account_id)
    if mapping is None or mapping["state"] != "linked":
        return
    contacts = await storage.contacts_of_account(ctx.conn, org, account_id)
    await _create_client_users(ctx, org, portal_id, mapping["pm_id"], contacts)


@router.on("crm.contact.upserted")
async def on_contact(ctx: HandlerContext, event: Event[crm.CrmContactUpserted]) -> None:
    p, org, conn = event.payload, event.org_id, ctx.conn
    name = domain.contact_name(p.first_name, p.last_name)
    if not await storage.apply_versioned(conn, "contacts", {"org_id": org, "id": p.id},
                                         {"account_id": p.account_id, "name": name, "email": p.email,
                                          "email_norm": normalise_email(p.email), "deleted": False}, p.version):
        return
    portal_id = await storage.portal_of(conn, org)
    if portal_id is None:
        return
    contact = await storage.get_row(conn, "contacts", org_id=org, id=p.id)
    mapping = await storage.get_mapping(conn, org, portal_id, "contact", p.id)
    account_mapping = (await storage.get_mapping(conn, org, portal_id, "account", p.account_id)
                       if p.account_id else None)
    company_id = account_mapping["pm_id"] if account_mapping and account_mapping["state"] == "linked" else None
    if mapping is None:
        if company_id is not None:
            await _create_client_users(ctx, org, portal_id, company_id, [contact])
        return
    if mapping["state"] != "linked":
        return
    client_user = await storage.get_row(conn, "client_users", org_id=org, portal_id=portal_id, id=mapping["pm_id"])
    if client_user is None or client_user["deleted"]:
        return
    changes: dict[str, Any] = {}
    if p.email is not None and normalise_email(p.email) != client_user["email_norm"]:
        changes["email"] = p.email
    if name != client_user["name"]:
        changes["name"] = name
    if company_id is not None and company_id != client_user["client_company_id"]:
        changes["client_company_id"] = company_id  # one contact, one client company: move it
    if changes:
        await send_command(ctx, org, cmd.PmClientUserUpdate(
            command_id=uuid.uuid4(), portal_id=portal_id, client_user_id=mapping["pm_id"], **changes,
        ), f"client_user:{org}:{p.id}", "contact", p.id)


@router.on("crm.contact.deleted")
async def on_contact_deleted(ctx: HandlerContext, event: Event[crm.CrmContactDeleted]) -> None:
    p, org = event.payload, event.org_id
    if await storage.apply_versioned(ctx.conn, "contacts", {"org_id": org, "id": p.id}, {"deleted": True}, p.version):
        await _unlink(ctx, org, "contact", crm_id=p.id)


@router.on("pm.client_company.upserted")
async def on_client_company(ctx: HandlerContext, event: Event[pm.PmClientCompanyUpserted]) -> None:
    p, org, conn = event.payload, event.org_id, ctx.conn
    if not await storage.apply_versioned(conn, "client_companies", {"org_id": org, "portal_id": p.portal_id, "id": p.id},
                                         {"name": p.name, "deleted": False}, p.version):
        return
    pending = await storage.take_pending(conn, org, p.command_id)
    if await storage.portal_of(conn, org) != p.portal_id:
        return
    if pending is not None and pending["command_type"] == "pm.client_company.create":
        account_id = pending["subject_id"]
        mapping = await storage.get_mapping(conn, org, p.portal_id, "account", account_id)
        if mapping is not None and mapping["state"] == "linked" and mapping["pm_id"] != p.id:
            log.warning("created client company not paired: its account was paired meanwhile (matching)",
                        account_id=account_id, client_company_id=p.id, paired=mapping["pm_id"])
            return
    elif await storage.mapping_by_pm(conn, org, p.portal_id, "account", p.id) is not None:
        return  # already paired; the PM side's rename has no CRM command to go to
    elif await storage.matching_pending(conn, org):
        return  # linking's matching decides, identity adopts its result
    else:
        accounts = await storage.unmapped_accounts_named(conn, org, p.portal_id, p.name)
        if len(accounts) != 1:
            return
        account_id = accounts[0]["id"]
    await publish_mapping(ctx, org, p.portal_id, "account", account_id, p.id, "linked")
    await sync_account_contacts(ctx, org, p.portal_id, account_id)


@router.on("pm.client_company.deleted")
async def on_client_company_deleted(ctx: HandlerContext, event: Event[pm.PmClientCompanyDeleted]) -> None:
    p, org = event.payload, event.org_id
    if await storage.apply_versioned(ctx.conn, "client_companies", {"org_id": org, "portal_id": p.portal_id, "id": p.id},
                                     {"deleted": True}, p.version):
        if await storage.portal_of(ctx.conn, org) == p.portal_id:
            await _unlink(ctx, org, "account", pm_id=p.id, portal_id=p.portal_id)


@router.on("pm.client_user.upserted")
async def on_client_user(ctx: HandlerContext, event: Event[pm.PmClientUserUpserted]) -> None:
    p, org, conn = event.payload, event.org_id, ctx.conn
    email_norm = normalise_email(p.email)
    if not await storage.apply_versioned(conn, "client_users", {"org_id": org, "portal_id": p.portal_id, "id": p.id},
                                         {"email": p.email, "email_norm": email_norm, "name": p.name,
                                          "client_company_id": p.client_company_id, "deleted": False}, p.version):
        return
    pending = await storage.take_pending(conn, org, p.command_id)
    if await storage.portal_of(conn, org) != p.portal_id:
        return
    if pending is not None and pending["command_type"] == "pm.client_user.create":
        if pending["subject_kind"] == "contact":
            await publish_mapping(ctx, org, p.portal_id, "contact", pending["subject_id"], p.id, "linked")
        return
    if await storage.mapping_by_pm(conn, org, p.portal_id, "contact", p.id) is not None:
        return  # already paired; PM-side edits have no CRM command to go to
    account = await conn.fetchval(
        "SELECT crm_id FROM customer_mappings WHERE org_id = $1 AND portal_id = $2 AND kind = 'account' "
        "AND pm_id = $3 AND state = 'linked'", org, p.portal_id, p.client_company_id)
    if account is None:
        return
    candidates = [c for c in await storage.contacts_of_account(conn, org, account)
                  if c["email_norm"] == email_norm
                  and await storage.get_mapping(conn, org, p.portal_id, "contact", c["id"]) is None]
    if len(candidates) == 1:
        await publish_mapping(ctx, org, p.portal_id, "contact", candidates[0]["id"], p.id, "linked")


@router.on("pm.client_user.removed")
async def on_client_user_removed(ctx: HandlerContext, event: Event[pm.PmClientUserRemoved]) -> None:
    p, org = event.payload, event.org_id
    if await storage.apply_versioned(ctx.conn, "client_users", {"org_id": org, "portal_id": p.portal_id, "id": p.id},
                                     {"deleted": True}, p.version):
        if await storage.portal_of(ctx.conn, org) == p.portal_id:
            await _unlink(ctx, org, "contact", pm_id=p.id, portal_id=p.portal_id)


@router.on("pm.command.rejected")
async def on_command_rejected(ctx: HandlerContext, event: Event[pm.PmCommandRejected]) -> None:
    p, org = event.payload, event.org_id
    pending = await storage.take_pending(ctx.conn, org, p.command_id)
    if pending is None:
        return  # not identity's command (or already settled)
    log.warning("pm side rejected a command", command_type=pending["command_type"], reason_code=p.reason_code)
    if pending["command_type"] in ("pm.client_company.create", "pm.client_user.create") \
            and pending["subject_kind"] in ("account", "contact"):
        portal_id = await storage.portal_of(ctx.conn, org)
        if portal_id is None:
            return
        mapping = await storage.get_mapping(ctx.conn, org, portal_id, pending["subject_kind"], pending["subject_id"])
        if mapping is not None and mapping["pending_command_id"] == p.command_id:
            await publish_mapping(ctx, org, portal_id, pending["subject_kind"], pending["subject_id"], None, "unlinked")
