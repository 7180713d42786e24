"""SQL of the CRM connector (its own schema). Record versions, applied commands and cursors are the same
tables in both connectors (hub_zoho.state); the notification channels are the CRM's alone."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from hub_zoho.state import applied_command, cursor, record_command, reset_cursors, save_cursor, version_of

__all__ = ["applied_command", "channel", "cursor", "record_command", "reset_cursors", "save_channel", "save_cursor", "version_of"]

Db = asyncpg.Connection | asyncpg.Pool


async def channel(db: Db, org_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT channel_id, events, expires_at FROM channels WHERE org_id = $1", org_id)


async def save_channel(db: Db, org_id: str, channel_id: int, events: list[str], expires_at: datetime) -> None:
    await db.execute(
        """INSERT INTO channels (org_id, channel_id, events, expires_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id) DO UPDATE SET channel_id = EXCLUDED.channel_id, events = EXCLUDED.events,
           expires_at = EXCLUDED.expires_at, renewed_at = now()""",
        org_id, channel_id, events, expires_at)
