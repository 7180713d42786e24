"""SQL of the notification service (deliveries = the delivery log, preferences = opt-outs).

A delivery row moves pending → sending (claimed with a lease, `FOR UPDATE SKIP
LOCKED`, so replicas never claim the same row) → sent | failed, or goes
straight to suppressed. A `sending` row whose lease expired was claimed by a
process that died mid-send: it is claimed again and `resent_after_crash` is
incremented (the only way one request can produce two mails).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from hub_schema.events.notifications import MatchingReportPage

NOTIFY_CHANNEL = "hub_notifications_pending"

COLUMNS = (
    "request_id, org_id, kind, optional, recipient_email, recipient_name, locale, state, message_id, "
    "attempts, deferrals, resent_after_crash, next_attempt_at, lease_until, last_error, suppressed_reason, "
    "created_at, updated_at, sent_at, attachment_name"
)


async def insert_delivery(conn: asyncpg.Connection, **row: Any) -> bool:
    """Insert the delivery for a request; False if the request_id is already known (a duplicate)."""
    names = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO deliveries ({names}) VALUES ({params}) ON CONFLICT (request_id) DO NOTHING RETURNING true",
        *row.values(),
    )
    if inserted and row.get("state") == "pending":
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return bool(inserted)


async def opted_out(conn: asyncpg.Connection, org_id: str, email: str, kind: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT opted_out FROM preferences WHERE org_id = $1 AND email = lower($2) AND kind = $3", org_id, email, kind,
    ))


async def set_preference(conn: asyncpg.Connection, org_id: str, email: str, kind: str, opted_out: bool,
                         changed_at: datetime, changed_by: str | None) -> bool:
    """Apply the org's preference unless a newer change for (org, email, kind) is stored; True if applied."""
    applied = await conn.fetchval(
        """
        INSERT INTO preferences (org_id, email, kind, opted_out, changed_at, changed_by)
        VALUES ($1, lower($2), $3, $4, $5, $6)
        ON CONFLICT (org_id, email, kind) DO UPDATE SET opted_out = EXCLUDED.opted_out,
            changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by
        WHERE preferences.changed_at < EXCLUDED.changed_at
        RETURNING true
        """,
        org_id, email, kind, opted_out, changed_at, changed_by,
    )
    return bool(applied)


async def preferences_of(conn: asyncpg.Connection, org_id: str, email: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT kind, opted_out, changed_at, changed_by FROM preferences WHERE org_id = $1 AND email = lower($2) "
        "ORDER BY kind", org_id, email,
    )


async def claim_one(conn: asyncpg.Connection, lease_seconds: float) -> asyncpg.Record | None:
    """Claim the next due mail (or one whose sender died: lease expired) for this worker."""
    return await conn.fetchrow(
        """
        WITH due AS (
            SELECT request_id, state AS prev_state FROM deliveries
            WHERE (state = 'pending' AND next_attempt_at <= now()) OR (state = 'sending' AND lease_until < now())
            ORDER BY next_attempt_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE deliveries d SET
            state = 'sending',
            lease_until = now() + make_interval(secs => $1),
            resent_after_crash = d.resent_after_crash + CASE WHEN due.prev_state = 'sending' THEN 1 ELSE 0 END,
            updated_at = now()
        FROM due WHERE d.request_id = due.request_id
        RETURNING d.*, due.prev_state
        """,
        lease_seconds,
    )


async def mark_sent(conn: asyncpg.Connection, request_id: uuid.UUID, attempts: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE deliveries SET state = 'sent', attempts = $2, sent_at = now(), lease_until = NULL, last_error = NULL, "
        "updated_at = now() WHERE request_id = $1 RETURNING sent_at",
        request_id, attempts,
    )


async def mark_failed(conn: asyncpg.Connection, request_id: uuid.UUID, attempts: int, error: str) -> None:
    await conn.execute(
        "UPDATE deliveries SET state = 'failed', attempts = $2, last_error = $3, lease_until = NULL, updated_at = now() "
        "WHERE request_id = $1",
        request_id, attempts, error[:2000],
    )


async def reschedule(conn: asyncpg.Connection, request_id: uuid.UUID, *, attempts: int, delay: float,
                     error: str, outage: bool) -> None:
    """Back to pending, due after `delay` seconds (a refusal or an outage; the mail is kept)."""
    await conn.execute(
        "UPDATE deliveries SET state = 'pending', attempts = $2, last_error = $3, lease_until = NULL, "
        "next_attempt_at = now() + make_interval(secs => $4), deferrals = deferrals + $5::int, updated_at = now() "
        "WHERE request_id = $1",
        request_id, attempts, error[:2000], delay, 1 if outage else 0,
    )


async def retry_failed(conn: asyncpg.Connection, request_id: uuid.UUID) -> bool:
    """Operator policy: a failed mail may be queued again (attempts start over)."""
    ok = await conn.fetchval(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now() "
        "WHERE request_id = $1 AND state = 'failed' RETURNING true",
        request_id,
    )
    if ok:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return bool(ok)


async def find_deliveries(conn: asyncpg.Connection, *, request_id: uuid.UUID | None = None,
                          recipient: str | None = None, org_id: str | None = None, before: int | None = None,
                          limit: int = 100) -> list[asyncpg.Record]:
    """The log, newest first, `limit` rows older than the row numbered `before` (`seq` pages it)."""
    return await conn.fetch(
        f"SELECT seq, {COLUMNS} FROM deliveries WHERE ($1::uuid IS NULL OR request_id = $1) "
        "AND ($2::text IS NULL OR lower(recipient_email) = lower($2)) AND ($3::text IS NULL OR org_id = $3) "
        "AND ($4::bigint IS NULL OR seq < $4) ORDER BY seq DESC LIMIT $5",
        request_id, recipient, org_id, before, limit,
    )


async def store_report_page(conn: asyncpg.Connection, request_id: uuid.UUID, rows: MatchingReportPage) -> None:
    dumped = rows.model_dump(mode="json")
    await conn.execute(
        "INSERT INTO report_pages (request_id, page, pages, matched, unmatched) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT DO NOTHING",
        request_id, rows.page, rows.pages, dumped["matched"], dumped["unmatched"])  # jsonb: the pool's codec


async def take_report_pages(conn: asyncpg.Connection, request_id: uuid.UUID) -> list[MatchingReportPage]:
    """The stored pages of a request's report, in page order; they leave the table."""
    rows = await conn.fetch(
        "DELETE FROM report_pages WHERE request_id = $1 RETURNING page, pages, matched, unmatched", request_id)
    return [MatchingReportPage(page=r["page"], pages=r["pages"], matched=r["matched"], unmatched=r["unmatched"])
            for r in sorted(rows, key=lambda r: r["page"])]
