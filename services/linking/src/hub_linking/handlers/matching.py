"""Client ↔ account matching (S21/S22): run on a portal's first enable, on a switch of portal and on resync.

Each client is matched in its own savepoint, retried a few times: one client that fails is reported as an error
and the others are still matched. The report goes once, at the end, by reference (pages, then the counts).
"""

from __future__ import annotations

import uuid

from hub_linking import domain, storage
from hub_linking.handlers.common import emit_links, notify, now, portal_name
from hub_platform.consumer import INFRASTRUCTURE_ERRORS, HandlerContext
from hub_schema.events.linking import MatchingCompleted, MatchingPage
from hub_schema.events.notifications import MatchedClient, MatchingReportPage, MatchingReportSummary, UnmatchedClient
from hub_schema.names import normalise_email

MATCHING_ATTEMPTS = 3


async def run_matching(ctx: HandlerContext, org: str, portal_id: str, admin: domain.Actor) -> None:
    """Match every client company of the portal to CRM accounts; link; report once at the end."""
    clients = await storage.clients_of_portal(ctx.conn, org, portal_id)
    index = domain.index_accounts(await storage.accounts_of_org(ctx.conn, org))
    matched: list[MatchedClient] = []
    unmatched: list[UnmatchedClient] = []
    linked = 0
    for client in clients:
        outcome: domain.MatchResult | None = None
        for attempt in range(1, MATCHING_ATTEMPTS + 1):
            try:
                async with ctx.savepoint():
                    outcome, n = await _match_one(ctx, org, portal_id, client.company_id, client.name, index)
                linked += n
                break
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:  # transient: retried, then reported as an error for this client
                ctx.log.warning("matching a client failed", client_id=client.company_id, attempt=attempt,
                                error=repr(exc))
                outcome = domain.MatchResult(client.company_id, client.name, "error",
                                             reason=f"matching failed after {attempt} attempts: {type(exc).__name__}")
        assert outcome is not None
        if outcome.outcome == "matched":
            matched.append(MatchedClient(client_company_id=outcome.client_id, client_name=outcome.client_name,
                                         account_id=outcome.account_id or "", account_name=outcome.account_name or ""))
        else:
            unmatched.append(UnmatchedClient(client_company_id=outcome.client_id, client_name=outcome.client_name,
                                             reason_code=outcome.outcome, reason=outcome.reason,  # type: ignore[arg-type]
                                             account_names=list(outcome.candidates)))
    await storage.mark_matched(ctx.conn, org, portal_id)
    # The report goes by reference: its rows in pages cut to fit a message, then the counts (issue 15).
    cut = domain.report_pages(matched, unmatched)
    pages = [MatchingReportPage(page=n, pages=len(cut), matched=m, unmatched=u) for n, (m, u) in enumerate(cut, 1)]
    report = MatchingReportSummary(report_id=uuid.uuid5(ctx.event.event_id, "matching_report"), portal_id=portal_id,
                                   finished_at=now(), matched=len(matched), unmatched=len(unmatched), pages=len(pages))
    # Same key as linking.integration.changed: identity must see the enable (matching_pending) before the result.
    for page in pages:
        await ctx.emit(MatchingPage(report_id=report.report_id, portal_id=portal_id, rows=page),
                       entity_key=f"{org}:integration", org_id=org, origin="hub")
    await ctx.emit(MatchingCompleted(report=report, requested_by=admin.crm_user_id, projects_linked=linked),
                   entity_key=f"{org}:integration", org_id=org, origin="hub")
    await notify(ctx, org, admin, "matching_report", optional=False,
                 data={"counts": {"matched": len(matched), "unmatched": len(unmatched)},
                       **await portal_name(ctx, org, portal_id)}, report=report, report_pages=pages)


async def _match_one(ctx: HandlerContext, org: str, portal_id: str, company_id: str, name: str,
                     index: dict[str, list[tuple[str, str]]]) -> tuple[domain.MatchResult, int]:
    """Pair one client with its account, link the client's projects to it, and the account's contacts that are
    the client's users (same e-mail) to the projects those users are in; (outcome, links made)."""
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
    await storage.set_pairs(conn, org, portal_id, "account", {account_id: company_id})
    projects = await storage.projects_of_company(conn, org, portal_id, company_id)
    links = await emit_links(ctx, org, portal_id, [(pr.project_id, "account", account_id) for pr in projects],
                             linked=True, source="matching")
    contacts = {normalise_email(c.email): c.record_id
                for c in await storage.contacts_of_account(conn, org, account_id) if normalise_email(c.email)}
    users = await storage.client_users_of_company(conn, org, portal_id, company_id)
    found = [(contacts[e], cu.client_user_id) for cu in users if (e := normalise_email(cu.email)) in contacts]
    await storage.set_pairs(conn, org, portal_id, "contact", dict(found))
    contact_links = [(pr.project_id, "contact", contact_id)
                     for contact_id, cu_id in found for pr in projects if cu_id in pr.client_user_ids]
    links += await emit_links(ctx, org, portal_id, contact_links, linked=True, source="matching")
    return result, links

