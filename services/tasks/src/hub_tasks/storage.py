"""SQL of the task-mirroring service, on the handler's (or an HTTP request's) asyncpg connection.

Projections of other services' events are upserted only when newer (by
`revision` or upstream `version`), so stale and out-of-order copies change nothing.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

Row = dict[str, Any]


def _row(r: asyncpg.Record | None) -> Row | None:
    return dict(r) if r is not None else None


# --- projections ---------------------------------------------------------------


async def upsert_integration(conn: asyncpg.Connection, org_id: str, enabled: bool, portal_id: str | None, revision: int) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO integrations (org_id, enabled, portal_id, revision) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (org_id) DO UPDATE SET enabled = EXCLUDED.enabled, portal_id = EXCLUDED.portal_id, "
        "revision = EXCLUDED.revision WHERE integrations.revision < EXCLUDED.revision RETURNING true",
        org_id, enabled, portal_id, revision))


async def integration(conn: asyncpg.Connection, org_id: str) -> Row | None:
    return _row(await conn.fetchrow("SELECT * FROM integrations WHERE org_id = $1", org_id))


async def upsert_link(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str, record_type: str,
                      record_id: str, linked: bool, revision: int) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO links (org_id, portal_id, project_id, record_type, record_id, linked, revision) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, project_id, record_type, record_id) DO UPDATE SET "
        "portal_id = EXCLUDED.portal_id, linked = EXCLUDED.linked, revision = EXCLUDED.revision "
        "WHERE links.revision < EXCLUDED.revision RETURNING true",
        org_id, portal_id, project_id, record_type, record_id, linked, revision))


async def linked_records(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT record_type, record_id FROM links WHERE org_id = $1 AND portal_id = $2 AND project_id = $3 AND linked "
        "ORDER BY record_type, record_id", org_id, portal_id, project_id)
    return [dict(r) for r in rows]


async def linked_projects(conn: asyncpg.Connection, org_id: str, portal_id: str, record_type: str, record_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT portal_id, project_id FROM links WHERE org_id = $1 AND portal_id = $2 AND record_type = $3 "
        "AND record_id = $4 AND linked ORDER BY project_id", org_id, portal_id, record_type, record_id)
    return [dict(r) for r in rows]


async def upsert_user(conn: asyncpg.Connection, org_id: str, p: Any) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO users (org_id, crm_user_id, email, name, locale, active, portal_user_id, permissions, revision) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (org_id, crm_user_id) DO UPDATE SET "
        "email = EXCLUDED.email, name = EXCLUDED.name, locale = EXCLUDED.locale, active = EXCLUDED.active, "
        "portal_user_id = EXCLUDED.portal_user_id, permissions = EXCLUDED.permissions, revision = EXCLUDED.revision "
        "WHERE users.revision < EXCLUDED.revision RETURNING true",
        org_id, p.crm_user_id, p.email, p.name, p.locale, p.active, p.portal_user_id, list(p.profile.permissions), p.revision))


async def user(conn: asyncpg.Connection, org_id: str, crm_user_id: str | None) -> Row | None:
    if crm_user_id is None:
        return None
    return _row(await conn.fetchrow("SELECT * FROM users WHERE org_id = $1 AND crm_user_id = $2", org_id, crm_user_id))


async def crm_user_of_portal_user(conn: asyncpg.Connection, org_id: str, portal_user_id: str) -> str | None:
    return await conn.fetchval(
        "SELECT crm_user_id FROM users WHERE org_id = $1 AND portal_user_id = $2 ORDER BY active DESC, crm_user_id LIMIT 1",
        org_id, portal_user_id)


async def upsert_project(conn: asyncpg.Connection, org_id: str, project_id: str, portal_id: str, schedule_fixed: bool,
                         version: int, deleted: bool = False) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO projects (org_id, project_id, portal_id, schedule_fixed, version, deleted) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (org_id, project_id) DO UPDATE SET portal_id = EXCLUDED.portal_id, "
        "schedule_fixed = CASE WHEN EXCLUDED.deleted THEN projects.schedule_fixed ELSE EXCLUDED.schedule_fixed END, "
        "version = EXCLUDED.version, deleted = EXCLUDED.deleted WHERE projects.version < EXCLUDED.version RETURNING true",
        org_id, project_id, portal_id, schedule_fixed, version, deleted))


async def project(conn: asyncpg.Connection, org_id: str, project_id: str) -> Row | None:
    return _row(await conn.fetchrow("SELECT * FROM projects WHERE org_id = $1 AND project_id = $2", org_id, project_id))


# --- upstream task snapshots -----------------------------------------------------


async def pm_task(conn: asyncpg.Connection, org_id: str, task_id: str) -> Row | None:
    return _row(await conn.fetchrow("SELECT * FROM pm_tasks WHERE org_id = $1 AND task_id = $2", org_id, task_id))


async def save_pm_task(conn: asyncpg.Connection, org_id: str, p: Any, fields: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO pm_tasks (org_id, task_id, portal_id, project_id, parent_task_id, status, recurring, add_to_crm, "
        "fields, modified_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
        "ON CONFLICT (org_id, task_id) DO UPDATE SET portal_id = EXCLUDED.portal_id, project_id = EXCLUDED.project_id, "
        "parent_task_id = EXCLUDED.parent_task_id, status = EXCLUDED.status, recurring = EXCLUDED.recurring, "
        "add_to_crm = EXCLUDED.add_to_crm, fields = EXCLUDED.fields, modified_at = EXCLUDED.modified_at, "
        "version = EXCLUDED.version, deleted = false",
        org_id, p.id, p.portal_id, p.project_id, p.parent_task_id, p.status, p.recurring, p.add_to_crm, fields,
        p.modified_at, p.version)


async def mark_pm_task_deleted(conn: asyncpg.Connection, org_id: str, p: Any) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO pm_tasks (org_id, task_id, portal_id, project_id, status, recurring, add_to_crm, fields, modified_at, "
        "version, deleted) VALUES ($1, $2, $3, $4, 'closed', false, false, '{}'::jsonb, $5, $6, true) "
        "ON CONFLICT (org_id, task_id) DO UPDATE SET deleted = true, version = EXCLUDED.version "
        "WHERE pm_tasks.version < EXCLUDED.version RETURNING true",
        org_id, p.id, p.portal_id, p.project_id, p.modified_at, p.version))


async def flagged_pm_tasks(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT * FROM pm_tasks WHERE org_id = $1 AND portal_id = $2 AND add_to_crm AND NOT recurring AND NOT deleted "
        "ORDER BY task_id", org_id, portal_id)
    return [dict(r) for r in rows]


async def crm_task(conn: asyncpg.Connection, org_id: str, task_id: str) -> Row | None:
    return _row(await conn.fetchrow("SELECT * FROM crm_tasks WHERE org_id = $1 AND task_id = $2", org_id, task_id))


async def save_crm_task(conn: asyncpg.Connection, org_id: str, task_id: str, record_type: str | None, record_id: str | None,
                        version: int, deleted: bool = False) -> None:
    await conn.execute(
        "INSERT INTO crm_tasks (org_id, task_id, record_type, record_id, version, deleted) "
        "VALUES ($1, $2, coalesce($3, ''), coalesce($4, ''), $5, $6) ON CONFLICT (org_id, task_id) DO UPDATE SET "
        "record_type = coalesce($3, crm_tasks.record_type), record_id = coalesce($4, crm_tasks.record_id), "
        "version = EXCLUDED.version, deleted = EXCLUDED.deleted",
        org_id, task_id, record_type, record_id, version, deleted)


# --- mappings and commands -----------------------------------------------------------


async def create_mapping(conn: asyncpg.Connection, *, hub_task_id: uuid.UUID, org_id: str, origin: str, portal_id: str,
                         project_id: str, pm_task_id: str | None, record_type: str, record_id: str,
                         crm_task_id: str | None, state: dict[str, Any], pm_version: int | None,
                         crm_version: int | None) -> None:
    await conn.execute(
        "INSERT INTO task_mappings (hub_task_id, org_id, origin, portal_id, project_id, pm_task_id, record_type, record_id, "
        "crm_task_id, state, pm_version, crm_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        hub_task_id, org_id, origin, portal_id, project_id, pm_task_id, record_type, record_id, crm_task_id, state,
        pm_version, crm_version)


async def mapping(conn: asyncpg.Connection, hub_task_id: uuid.UUID) -> Row | None:
    return _row(await conn.fetchrow("SELECT * FROM task_mappings WHERE hub_task_id = $1 FOR UPDATE", hub_task_id))


async def mappings_of_pm_task(conn: asyncpg.Connection, org_id: str, pm_task_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT * FROM task_mappings WHERE org_id = $1 AND pm_task_id = $2 ORDER BY record_type, record_id FOR UPDATE",
        org_id, pm_task_id)
    return [dict(r) for r in rows]


async def mapping_of_crm_task(conn: asyncpg.Connection, org_id: str, crm_task_id: str) -> Row | None:
    return _row(await conn.fetchrow(
        "SELECT * FROM task_mappings WHERE org_id = $1 AND crm_task_id = $2 FOR UPDATE", org_id, crm_task_id))


async def mappings_of_org(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT * FROM task_mappings WHERE org_id = $1 AND portal_id = $2 ORDER BY created_at, hub_task_id FOR UPDATE",
        org_id, portal_id)
    return [dict(r) for r in rows]


async def save_mapping(conn: asyncpg.Connection, m: Row) -> None:
    await conn.execute(
        "UPDATE task_mappings SET pm_task_id = $2, crm_task_id = $3, state = $4, pm_version = $5, crm_version = $6, "
        "updated_at = now() WHERE hub_task_id = $1",
        m["hub_task_id"], m["pm_task_id"], m["crm_task_id"], m["state"], m["pm_version"], m["crm_version"])


async def record_command(conn: asyncpg.Connection, *, command_id: uuid.UUID, hub_task_id: uuid.UUID, org_id: str,
                         target: str, kind: str, changes: dict[str, Any], source_at: dict[str, str],
                         acting_user_id: str | None) -> None:
    await conn.execute(
        "INSERT INTO task_commands (command_id, hub_task_id, org_id, target, kind, changes, source_at, acting_user_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        command_id, hub_task_id, org_id, target, kind, changes, source_at, acting_user_id)


async def command(conn: asyncpg.Connection, command_id: uuid.UUID | None) -> Row | None:
    if command_id is None:
        return None
    return _row(await conn.fetchrow("SELECT * FROM task_commands WHERE command_id = $1", command_id))


async def set_command_outcome(conn: asyncpg.Connection, command_id: uuid.UUID, outcome: str) -> None:
    await conn.execute("UPDATE task_commands SET outcome = $2 WHERE command_id = $1 AND outcome IS NULL", command_id, outcome)


# --- history ---------------------------------------------------------------------------


async def record_decision(conn: asyncpg.Connection, *, org_id: str, hub_task_id: uuid.UUID | None, pm_task_id: str | None,
                          crm_task_id: str | None, side: str, event_id: uuid.UUID | None, event_type: str | None,
                          decision: str, reason_code: str, reason: str, fields: list[str]) -> None:
    await conn.execute(
        "INSERT INTO task_decisions (org_id, hub_task_id, pm_task_id, crm_task_id, side, event_id, event_type, decision, "
        "reason_code, reason, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        org_id, hub_task_id, pm_task_id, crm_task_id, side, event_id, event_type, decision, reason_code, reason, fields)


def _decision_json(r: asyncpg.Record) -> Row:
    d = dict(r)
    return {"id": d["id"], "org_id": d["org_id"], "hub_task_id": str(d["hub_task_id"]) if d["hub_task_id"] else None,
            "pm_task_id": d["pm_task_id"], "crm_task_id": d["crm_task_id"], "side": d["side"],
            "event_id": str(d["event_id"]) if d["event_id"] else None, "event_type": d["event_type"],
            "decision": d["decision"], "reason_code": d["reason_code"], "reason": d["reason"],
            "fields": list(d["fields"]), "at": d["at"].isoformat()}


async def history_of_task(conn: asyncpg.Connection, hub_task_id: uuid.UUID) -> list[Row]:
    rows = await conn.fetch("SELECT * FROM task_decisions WHERE hub_task_id = $1 ORDER BY id", hub_task_id)
    return [_decision_json(r) for r in rows]


async def history(conn: asyncpg.Connection, org_id: str, pm_task_id: str | None, crm_task_id: str | None,
                  limit: int = 500) -> list[Row]:
    """Decisions about a PM or CRM task, including those of the mappings it belongs to."""
    rows = await conn.fetch(
        "SELECT * FROM task_decisions d WHERE d.org_id = $1 AND ("
        " ($2::text IS NOT NULL AND (d.pm_task_id = $2 OR d.hub_task_id IN "
        "   (SELECT hub_task_id FROM task_mappings WHERE org_id = $1 AND pm_task_id = $2)))"
        " OR ($3::text IS NOT NULL AND (d.crm_task_id = $3 OR d.hub_task_id IN "
        "   (SELECT hub_task_id FROM task_mappings WHERE org_id = $1 AND crm_task_id = $3)))"
        ") ORDER BY d.id LIMIT $4", org_id, pm_task_id, crm_task_id, limit)
    return [_decision_json(r) for r in rows]


def dumps(rows: list[Row]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=2)
