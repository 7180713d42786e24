"""The org's integration state (linking.integration.changed), linking's matching result, permission profiles (S3, S23)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from hub_identity import domain, storage
from hub_identity.domain import ProfileVersion
from hub_identity.handlers.accounts import adopt_matched_pairs, sync_unmapped_accounts
from hub_identity.handlers.common import is_admin, on, publish_access, refuse, state_of
from hub_identity.handlers.users import rematch_users
from hub_identity.rows import Org
from hub_platform.consumer import HandlerContext, Router
from hub_platform.logs import get_logger
from hub_schema import Event
from hub_schema.events import linking, requests
from hub_schema.events.common import PermissionProfile
from hub_schema.events.identity import PermissionProfileChanged

log = get_logger(__name__)
router = Router()


def _now() -> datetime:
    return datetime.now(timezone.utc)


@on(router, linking.IntegrationChanged)
async def on_integration_changed(ctx: HandlerContext, event: Event[linking.IntegrationChanged]) -> None:
    p, org, st = event.payload, event.org_id, state_of(ctx)
    pending = p.state == "enabled" and p.matching_pending
    before = await st.org(org)
    if before is not None and before.integration_revision >= p.revision:
        return
    st.orgs.put(Org(org, p.state, p.portal_id, p.revision, pending))
    if p.profile_request_id is not None and p.permissions is not None:
        await apply_accepted_profile(ctx, org, p.permissions, p.changed_by, p.profile_request_id)
    if p.state != "enabled" or p.portal_id is None:
        return
    for user in await rematch_users(st, org, await st.crm_users_of_org(org)):
        await publish_access(ctx, org, user.crm_user_id, p.changed_at)
    if not pending:  # no matching will follow: accounts stored meanwhile sync now (S13)
        await sync_unmapped_accounts(ctx, org, p.portal_id)


@on(router, linking.MatchingPage)
async def on_matching_page(ctx: HandlerContext, event: Event[linking.MatchingPage]) -> None:
    """Adopt one page of linking's client <-> account pairs; note the ambiguous clients for the end (module doc)."""
    p, org = event.payload, event.org_id
    portal_id = await state_of(ctx).portal_of(org)
    if portal_id is None or portal_id != p.portal_id:
        log.info("matching rows for a portal not in use ignored", portal_id=p.portal_id, current=portal_id)
        return
    await adopt_matched_pairs(ctx, org, portal_id, [(m.account_id, m.client_company_id) for m in p.rows.matched])
    ambiguous = [u.client_company_id for u in p.rows.unmatched if u.reason_code == "ambiguous"]
    if ambiguous:
        await storage.note_ambiguous(ctx.conn, org, p.report_id, ambiguous)


@on(router, linking.MatchingCompleted)
async def on_matching_completed(ctx: HandlerContext, event: Event[linking.MatchingCompleted]) -> None:
    """The pages (adopted already, same key, in order) are all in: sync every account still unmapped."""
    report, org, st = event.payload.report, event.org_id, state_of(ctx)
    ambiguous = await storage.take_ambiguous(ctx.conn, org, report.report_id)
    org_row = await st.org(org)
    portal_id = org_row.portal if org_row else None
    if org_row is None or portal_id is None or portal_id != report.portal_id:
        log.info("matching result for a portal not in use ignored", portal_id=report.portal_id, current=portal_id)
        return
    st.orgs.put(Org(org, org_row.state, org_row.portal_id, org_row.integration_revision, False))
    await sync_unmapped_accounts(ctx, org, portal_id, ambiguous)


async def change_profile(ctx: HandlerContext, org: str, profile: PermissionProfile, requested: datetime | None,
                         changed_by: str, request_id: uuid.UUID) -> None:
    st = state_of(ctx)
    effective_from = domain.profile_effective_from(requested, _now())
    revision = await storage.add_profile(ctx.conn, org, profile, effective_from, changed_by, request_id)
    if revision is None:
        return  # this request was applied already
    st.new_profile(org, ProfileVersion(revision, profile, effective_from))
    await ctx.emit(PermissionProfileChanged(profile=profile, changed_by=changed_by, effective_from=effective_from,
                                            revision=revision), entity_key=f"{org}:profile", org_id=org)
    for user in await st.crm_users_of_org(org):
        await publish_access(ctx, org, user.crm_user_id, effective_from, profile)


@on(router, requests.PermissionsChange)
async def on_permissions_change(ctx: HandlerContext, event: Event[requests.PermissionsChange]) -> None:
    p, org = event.payload, event.org_id
    if not await is_admin(ctx, org, p.acting_user_id):
        await refuse(ctx, org, p, "not_admin", "only CRM admins may change the permissions CRM users get in the PM tool")
        return
    await change_profile(ctx, org, p.permissions, p.effective_from, p.acting_user_id, p.request_id)


async def apply_accepted_profile(ctx: HandlerContext, org: str, profile: PermissionProfile, changed_by: str,
                                 request_id: uuid.UUID) -> None:
    """The profile of a set-up linking accepted (S3); the raw hub.integration.enable is not identity's to act on,
    since linking may refuse it (S17 plan, field mapping, not admin) and a refused save must change nothing."""
    latest = await state_of(ctx).latest_profile(org)
    if latest is not None and latest.profile == profile:
        return
    await change_profile(ctx, org, profile, None, changed_by, request_id)
