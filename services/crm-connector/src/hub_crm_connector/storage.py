"""SQL of the CRM connector (its own schema): record versions, applied commands, cursors, channels."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg


async def lock_record(conn: asyncpg.Connection, org_id: str, module: str, record_id: str) -> asyncpg.Record | None:
    """The record's state, locked until the transaction ends (a notification, the poll and an echo of the same
    record take turns, so they agree on its versions)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{org_id}/{module}/{record_id}")
    return await conn.fetchrow(
        "SELECT version, content_hash, command_id, deleted FROM record_state WHERE org_id = $1 AND module = $2 AND record_id = $3",
        org_id, module, record_id)


async def save_record(conn: asyncpg.Connection, org_id: str, module: str, record_id: str, version: int, content_hash: str,
                      command_id: uuid.UUID | None, deleted: bool) -> None:
    await conn.execute(
        """INSERT INTO record_state (org_id, module, record_id, version, content_hash, command_id, deleted)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (org_id, module, record_id) DO UPDATE
           SET version = EXCLUDED.version, content_hash = EXCLUDED.content_hash, command_id = EXCLUDED.command_id,
               deleted = EXCLUDED.deleted""",
        org_id, module, record_id, version, content_hash, command_id, deleted)


async def applied_command(conn: asyncpg.Connection | asyncpg.Pool, command_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT module, record_id, outcome, reason_code, reason FROM applied_commands WHERE command_id = $1", command_id)


async def record_command(conn: asyncpg.Connection | asyncpg.Pool, *, command_id: uuid.UUID, org_id: str, command_type: str,
                         module: str, record_id: str | None, outcome: str, reason_code: str | None = None,
                         reason: str | None = None) -> None:
    await conn.execute(
        """INSERT INTO applied_commands (command_id, org_id, command_type, module, record_id, outcome, reason_code, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (command_id) DO NOTHING""",
        command_id, org_id, command_type, module, record_id, outcome, reason_code, reason)


async def cursor(conn: asyncpg.Connection | asyncpg.Pool, org_id: str, purpose: str, module: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT modified_since, page, done FROM cursors WHERE org_id = $1 AND purpose = $2 AND module = $3",
                               org_id, purpose, module)


async def save_cursor(conn: asyncpg.Connection | asyncpg.Pool, org_id: str, purpose: str, module: str,
                      modified_since: datetime | None, page: int = 1, done: bool = False) -> None:
    await conn.execute(
        """INSERT INTO cursors (org_id, purpose, module, modified_since, page, done) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (org_id, purpose, module) DO UPDATE
           SET modified_since = EXCLUDED.modified_since, page = EXCLUDED.page, done = EXCLUDED.done, updated_at = now()""",
        org_id, purpose, module, modified_since, page, done)


async def reset_cursors(conn: asyncpg.Connection | asyncpg.Pool, org_id: str, purpose: str) -> None:
    await conn.execute("DELETE FROM cursors WHERE org_id = $1 AND purpose = $2", org_id, purpose)


async def channel(conn: asyncpg.Connection | asyncpg.Pool, org_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT channel_id, events, expires_at FROM channels WHERE org_id = $1", org_id)


async def save_channel(conn: asyncpg.Connection | asyncpg.Pool, org_id: str, channel_id: int, events: list[str],
                       expires_at: datetime) -> None:
    await conn.execute(
        """INSERT INTO channels (org_id, channel_id, events, expires_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id) DO UPDATE SET channel_id = EXCLUDED.channel_id, events = EXCLUDED.events,
           expires_at = EXCLUDED.expires_at, renewed_at = now()""",
        org_id, channel_id, events, expires_at)


async def org_of_channel(conn: asyncpg.Connection | asyncpg.Pool, channel_id: int) -> Any:
    return await conn.fetchval("SELECT org_id FROM channels WHERE channel_id = $1", channel_id)
