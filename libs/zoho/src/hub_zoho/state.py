"""What both connectors keep in their own schema (same tables in each, see their migrations):
record versions, the commands already carried out, and cursors.

Zoho has no record revision the hub could use as `version`, so a connector numbers the versions itself:
a new one whenever what the hub sees of the record changed. The event id is derived from (org, module,
record, version), so the same state seen twice (a repeated notification, a poll, a backfill, the echo of
a command) is the same event and the hub's inboxes absorb the copies.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

EVENT_NAMESPACE = uuid.UUID("6f1c35a2-4b0e-5d7a-9c39-2d0a5e1c7b11")

Db = asyncpg.Connection | asyncpg.Pool


def content_hash(fields: dict[str, Any] | None) -> str:
    """Of what the hub sees (a change of a field the hub ignores is no new version); None = deleted."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def event_id(org_id: str, module: str, record_id: str, version: int) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, f"{org_id}/{module}/{record_id}/{version}")


def rejection_event_id(command_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, f"rejected/{command_id}")


async def version_of(conn: asyncpg.Connection, org_id: str, module: str, record_id: str, fields: dict[str, Any] | None,
                     command_id: uuid.UUID | None, *, created_by: uuid.UUID | None = None,
                     command_module: str | None = None) -> tuple[int, uuid.UUID | None] | None:
    """The version (and command id) to publish the record's current state under; None: a deletion of a record
    never published. Serialised per record (advisory lock until the transaction ends), so a notification, the
    poll and an echo of the same record agree. The echo of a command whose change a notification published
    first (without the command id) gets a version of its own, so the hub still learns the command id.

    A record seen for the first time by a notification or the poll (`command_id` None) that one of the hub's
    commands created is published with that command's id: the hub must learn it as its own echo, or it would
    take the record for a person's and mirror it back (a loop). The command is `created_by` (the marker the
    connector wrote into the record, race-free) or the applied step that recorded the record's id in
    `command_module`."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{org_id}/{module}/{record_id}")
    state = await conn.fetchrow(
        "SELECT version, content_hash, command_id FROM record_state WHERE org_id = $1 AND module = $2 AND record_id = $3",
        org_id, module, record_id)
    if fields is None and state is None:
        return None
    if state is None and command_id is None:
        command_id = created_by or await conn.fetchval(
            """SELECT coalesce(parent_command_id, command_id) FROM applied_commands
               WHERE org_id = $1 AND module = $2 AND record_id = $3 AND outcome = 'applied' ORDER BY applied_at LIMIT 1""",
            org_id, command_module or module, record_id)
    digest = content_hash(fields)
    if state is not None and state["content_hash"] == digest and (command_id is None or state["command_id"] == command_id):
        return state["version"], state["command_id"]
    version = state["version"] + 1 if state else 1
    await conn.execute(
        """INSERT INTO record_state (org_id, module, record_id, version, content_hash, command_id, deleted)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (org_id, module, record_id) DO UPDATE
           SET version = EXCLUDED.version, content_hash = EXCLUDED.content_hash, command_id = EXCLUDED.command_id,
               deleted = EXCLUDED.deleted""",
        org_id, module, record_id, version, digest, command_id, fields is None)
    return version, command_id


def command_marker(value: Any) -> uuid.UUID | None:
    """The command id a connector wrote into a record it created (CRM `Hub_Command_Id`, Projects `hub_command_id`)."""
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


async def applied_command(db: Db, command_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT module, record_id, outcome, reason_code, reason FROM applied_commands WHERE command_id = $1",
                             command_id)


async def record_command(db: Db, *, command_id: uuid.UUID, org_id: str, command_type: str, module: str,
                         record_id: str | None, outcome: str, reason_code: str | None = None, reason: str | None = None,
                         parent_command_id: uuid.UUID | None = None) -> None:
    """Call with the pool (its own, committed transaction) right after Zoho accepted or refused the command
    (or one step of it: `command_id` the step's id, `parent_command_id` the command's)."""
    await db.execute(
        """INSERT INTO applied_commands (command_id, org_id, command_type, module, record_id, outcome, reason_code, reason,
                                         parent_command_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (command_id) DO NOTHING""",
        command_id, org_id, command_type, module, record_id, outcome, reason_code, reason, parent_command_id)


async def cursor(db: Db, org_id: str, purpose: str, module: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT modified_since, page, page_token, done FROM cursors WHERE org_id = $1 AND purpose = $2 AND module = $3",
        org_id, purpose, module)


async def save_cursor(db: Db, org_id: str, purpose: str, module: str, modified_since: datetime | None, page: int = 1,
                      done: bool = False, page_token: str | None = None) -> None:
    await db.execute(
        """INSERT INTO cursors (org_id, purpose, module, modified_since, page, done, page_token) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (org_id, purpose, module) DO UPDATE
           SET modified_since = EXCLUDED.modified_since, page = EXCLUDED.page, done = EXCLUDED.done,
               page_token = EXCLUDED.page_token, updated_at = now()""",
        org_id, purpose, module, modified_since, page, done, page_token)


async def reset_cursors(db: Db, org_id: str, purpose: str) -> None:
    await db.execute("DELETE FROM cursors WHERE org_id = $1 AND purpose = $2", org_id, purpose)
