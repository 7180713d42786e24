"""SQL on an asyncpg connection (search_path = the sandbox schema): records, command ledger, message log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg


@dataclass
class Rec:
    org_id: str
    side: str
    kind: str
    id: str
    version: int
    deleted: bool
    modified_at: datetime
    data: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """What the read API shows: the record's fields, plus its revision and the tool's hidden extras."""
        return {**self.data, "version": self.version, "deleted": self.deleted, "modified_at": self.modified_at.isoformat(),
                "org_id": self.org_id, "extra": self.extra}


_COLS = "org_id, side, kind, id, version, deleted, modified_at, data, extra"


def _rec(row: asyncpg.Record | None) -> Rec | None:
    return Rec(**dict(row)) if row is not None else None


async def hosts_org(conn: asyncpg.Connection, org_id: str) -> bool:
    """Does the sandbox play this org's tools (anyone created a record in it)?"""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM records WHERE org_id = $1)", org_id))


async def set_locked(conn: asyncpg.Connection, org_id: str, side: str, kind: str, record_id: str, locked: bool) -> bool:
    """Lock a record against the integration's changes (or unlock it): no new version, no change event."""
    return bool(await conn.fetchval(
        "UPDATE records SET extra = extra || jsonb_build_object('locked', $5::boolean) "
        "WHERE org_id = $1 AND side = $2 AND kind = $3 AND id = $4 AND NOT deleted RETURNING true",
        org_id, side, kind, record_id, locked))


async def lock_org(conn: asyncpg.Connection, org_id: str) -> None:
    """Serialise the writes of one org's tools, so check-then-write rules (unique e-mails) hold."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sandbox:{org_id}")


async def next_id(conn: asyncpg.Connection, side: str, kind: str) -> str:
    n = await conn.fetchval("SELECT nextval('record_ids')")
    return f"{side}-{kind.replace('_', '-')}-{n}"


async def get(conn: asyncpg.Connection, org_id: str, side: str, kind: str, record_id: str, *, for_update: bool = False) -> Rec | None:
    sql = f"SELECT {_COLS} FROM records WHERE org_id = $1 AND side = $2 AND kind = $3 AND id = $4"
    return _rec(await conn.fetchrow(sql + (" FOR UPDATE" if for_update else ""), org_id, side, kind, record_id))


async def find(conn: asyncpg.Connection, org_id: str, side: str, kind: str, *, match: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None, include_deleted: bool = False) -> list[Rec]:
    """Records of a kind whose data (and extra) contain the given JSON values."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM records WHERE org_id = $1 AND side = $2 AND kind = $3 AND data @> $4 AND extra @> $5 "
        f"AND ($6 OR NOT deleted) ORDER BY created_at, id",
        org_id, side, kind, match or {}, extra or {}, include_deleted,
    )
    return [r for r in (_rec(row) for row in rows) if r is not None]


async def put(conn: asyncpg.Connection, rec: Rec) -> None:
    await conn.execute(
        "INSERT INTO records (org_id, side, kind, id, version, deleted, modified_at, data, extra) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (org_id, side, kind, id) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted, "
        "modified_at = EXCLUDED.modified_at, data = EXCLUDED.data, extra = EXCLUDED.extra",
        rec.org_id, rec.side, rec.kind, rec.id, rec.version, rec.deleted, rec.modified_at, rec.data, rec.extra,
    )


# --- commands and the message log -----------------------------------------------------------


async def command_seen(conn: asyncpg.Connection, command_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM applied_commands WHERE command_id = $1", command_id))


async def record_command(conn: asyncpg.Connection, *, command_id: uuid.UUID, command_type: str, org_id: str, side: str,
                         outcome: str, reason_code: str | None, event_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO applied_commands (command_id, command_type, org_id, side, outcome, reason_code, event_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        command_id, command_type, org_id, side, outcome, reason_code, event_id,
    )


async def log_message(conn: asyncpg.Connection, *, org_id: str, what: str, side: str, event_type: str,
                      event_id: uuid.UUID | None, command_id: uuid.UUID | None = None, entity_key: str | None = None,
                      reason_code: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO message_log (org_id, what, side, event_type, event_id, command_id, entity_key, reason_code) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        org_id, what, side, event_type, event_id, command_id, entity_key, reason_code,
    )


async def counters(conn: asyncpg.Connection, org_id: str | None = None) -> dict[str, Any]:
    """{what: {event_type: n}} plus totals per `what`, for one org or all."""
    rows = await conn.fetch(
        "SELECT what, event_type, count(*) AS n FROM message_log WHERE $1::text IS NULL OR org_id = $1 "
        "GROUP BY what, event_type ORDER BY what, event_type", org_id,
    )
    out: dict[str, Any] = {w: {} for w in ("command_applied", "command_rejected", "command_duplicate", "command_ignored",
                                           "event_emitted")}
    for r in rows:
        out[r["what"]][r["event_type"]] = r["n"]
    out["totals"] = {w: sum(v.values()) for w, v in out.items()}
    return out


async def message_log(conn: asyncpg.Connection, org_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, at, org_id, what, side, event_type, event_id, command_id, entity_key, reason_code FROM message_log "
        "WHERE $1::text IS NULL OR org_id = $1 ORDER BY id DESC LIMIT $2", org_id, limit,
    )
    return [{k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v) for k, v in dict(r).items()}
            for r in reversed(rows)]
