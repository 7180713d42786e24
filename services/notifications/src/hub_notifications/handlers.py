"""Handlers: a notification request becomes a row in the delivery log; nothing is sent here.

The handler runs inside the consumer's batch transaction, so it must not talk
to SMTP (a slow or absent mail server would hold the transaction and stop the
partition). It validates, renders the mail (so a template or data problem is
found now and dead-lettered with the reason, not retried by the sender),
stores it `pending` and wakes the sender (pg_notify, delivered on commit).

- Invalid recipient address → PermanentError `invalid_address`.
- No template for the kind in the recipient's locale → `unknown_template`.
- The request lacks data its template needs → `invalid_template_data`.
- Recipient opted out of an optional kind → row `suppressed` +
  `notification.suppressed` (opted_out); no mail.
- Same request_id again (a new event id re-announcing a request already
  handled; a redelivered event never reaches us, the inbox absorbs it) →
  nothing is sent, `notification.suppressed` (duplicate) tells subscribers.
- Unknown org: notifications are tenant-agnostic, every org is served (the
  producing service already decided the person must be told).
- A matching report (S21/S22) comes by reference: its rows arrive first as
  `notification.report_page` events on the request's key (same partition, so in
  order) and wait in `report_pages`; the request's summary says how many pages and
  rows there are. A request whose pages are not all there (or do not add up to its
  counts) → `report_incomplete`. Rendered, the pages are deleted.
- `hub.notification_preferences.change` (on hub.requests) stores opt-outs per
  (address, kind), newest `changed_at` wins, so stale or reordered changes are ignored.
"""

from __future__ import annotations

import uuid
from typing import Any

from hub_platform import service_keys
from hub_platform.consumer import HandlerContext, PermanentError, Router
from hub_schema import Event
from hub_schema.events.notifications import (
    MatchingReport,
    NotificationPreferencesChange,
    NotificationReportPage,
    NotificationRequested,
    NotificationSuppressed,
)

from hub_notifications import domain, storage
from hub_notifications.render import Renderer, TemplateDataError, TemplateMissing
from hub_notifications.report import matching_report_xlsx


def render_context(event: Event[NotificationRequested], locale: str, report: MatchingReport | None = None) -> dict[str, Any]:
    p = event.payload
    return {
        "kind": p.kind,
        "locale": locale,
        "request_id": str(p.request_id),
        "org_id": event.org_id,
        "recipient": p.recipient.model_dump(mode="json"),
        "recipient_name": domain.clean_display_name(p.recipient.name),
        "data": dict(p.data),
        "report": report.model_dump(mode="json") if report else None,
    }


def make_router(renderer: Renderer, *, default_locale: str, message_id_domain: str) -> Router:
    router = Router()
    router.include(service_keys.router)  # the org keys that open the preferences API

    @router.on(NotificationRequested)
    async def on_requested(ctx: HandlerContext, event: Event[NotificationRequested]) -> None:
        p = event.payload
        email = p.recipient.email
        entity_key = f"{event.org_id}:{p.request_id}"
        problem = domain.address_problem(email)
        if problem:
            raise PermanentError(f"the recipient address cannot be delivered to: {problem}", "invalid_address")
        if await ctx.conn.fetchval("SELECT state FROM deliveries WHERE request_id = $1", p.request_id):
            await ctx.emit(NotificationSuppressed(
                request_id=p.request_id, kind=p.kind, recipient_email=email, reason_code="duplicate",
                reason=f"request {p.request_id} was already handled; no second e-mail is sent",
            ), entity_key=entity_key)
            return
        locale = domain.pick_locale(p.recipient.locale, default_locale)
        row: dict[str, Any] = {
            "request_id": p.request_id, "org_id": event.org_id, "kind": p.kind, "optional": p.optional,
            "recipient_email": email, "recipient_name": p.recipient.name, "locale": locale,
            "message_id": domain.message_id(p.request_id, message_id_domain),
            "request_event_id": event.event_id, "correlation_id": event.envelope.correlation_id,
            "origin": event.envelope.origin, "entity_key": entity_key,
        }
        report = await assembled_report(ctx, event) if p.matching_report is not None else None
        if domain.is_suppressible(p.kind, p.optional) and await storage.opted_out(ctx.conn, event.org_id, email, p.kind):
            reason = f"{email} opted out of {p.kind} e-mails"
            if await storage.insert_delivery(ctx.conn, **row, state="suppressed", suppressed_reason=reason):
                await ctx.emit(NotificationSuppressed(
                    request_id=p.request_id, kind=p.kind, recipient_email=email, reason_code="opted_out", reason=reason,
                ), entity_key=entity_key, event_id=outcome_event_id(p.request_id, "suppressed"))
            return
        try:
            rendered = renderer.render(p.kind, locale, render_context(event, locale, report))
        except TemplateMissing as exc:
            raise PermanentError(str(exc), "unknown_template") from None
        except TemplateDataError as exc:
            raise PermanentError(str(exc), "invalid_template_data") from None
        attachment = name = None
        if report is not None:
            attachment = matching_report_xlsx(report, locale,
                                              lambda u: renderer.reason(u.reason_code, locale,
                                                                        {"account_names": u.account_names}))
            name = domain.report_filename(report.finished_at.date())
        await storage.insert_delivery(
            ctx.conn, **row, state="pending", subject=rendered.subject, body_text=rendered.text,
            body_html=rendered.html, attachment_name=name, attachment=attachment,
        )

    @router.on(NotificationReportPage)
    async def on_report_page(ctx: HandlerContext, event: Event[NotificationReportPage]) -> None:
        p = event.payload
        if await ctx.conn.fetchval("SELECT true FROM deliveries WHERE request_id = $1", p.request_id):
            return  # its request was handled already (a re-sent page)
        await storage.store_report_page(ctx.conn, p.request_id, p.rows)

    @router.on(NotificationPreferencesChange)
    async def on_preferences(ctx: HandlerContext, event: Event[NotificationPreferencesChange]) -> None:
        p = event.payload
        for kind in p.kinds:
            await storage.set_preference(ctx.conn, event.org_id, p.email, kind, p.opted_out, p.changed_at, p.acting_user_id)

    return router


async def assembled_report(ctx: HandlerContext, event: Event[NotificationRequested]) -> MatchingReport:
    """The whole report of a request from its stored pages (and they go: the delivery keeps the rendered mail)."""
    summary = event.payload.matching_report
    assert summary is not None
    pages = await storage.take_report_pages(ctx.conn, event.payload.request_id)
    report = MatchingReport(portal_id=summary.portal_id, finished_at=summary.finished_at,
                            matched=[m for page in pages for m in page.matched],
                            unmatched=[u for page in pages for u in page.unmatched])
    got = (len(pages), len(report.matched), len(report.unmatched))
    if got != (summary.pages, summary.matched, summary.unmatched) or any(pg.pages != summary.pages for pg in pages):
        raise PermanentError(f"matching report {summary.report_id} incomplete: {got[0]} of {summary.pages} pages, "
                             f"{got[1]} of {summary.matched} matched and {got[2]} of {summary.unmatched} unmatched "
                             "rows arrived before the request", "report_incomplete")
    return report


def outcome_event_id(request_id: uuid.UUID, outcome: str) -> uuid.UUID:
    """One outcome event id per request and outcome: a re-emission is absorbed by subscribers' inboxes."""
    return uuid.uuid5(request_id, f"notification.{outcome}")
