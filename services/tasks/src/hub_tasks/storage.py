"""SQL of the task-mirroring service, on the handler's (or an HTTP request's) asyncpg connection.

Projections of other services' events are upserted only when newer (by
`revision` or upstream `version`), so stale and out-of-order copies change nothing.
"""

from __future__ import annotations

import json
import re
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
        "INSERT INTO users (org_id, crm_user_id, email, name, locale, active, portal_user_id, permissions, revision, "
        "time_zone) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (org_id, crm_user_id) DO UPDATE SET "
        "email = EXCLUDED.email, name = EXCLUDED.name, locale = EXCLUDED.locale, active = EXCLUDED.active, "
        "portal_user_id = EXCLUDED.portal_user_id, permissions = EXCLUDED.permissions, revision = EXCLUDED.revision, "
        "time_zone = EXCLUDED.time_zone WHERE users.revision < EXCLUDED.revision RETURNING true",
        org_id, p.crm_user_id, p.email, p.name, p.locale, p.active, p.portal_user_id, list(p.profile.permissions), p.revision,
        p.time_zone))


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


# --- names for e-mails ----------------------------------------------------------------


async def save_display_name(conn: asyncpg.Connection, org_id: str, kind: str, id_: str, name: str, url: str | None,
                            version: int) -> None:
    await conn.execute(
        "INSERT INTO display_names (org_id, kind, id, name, url, version) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (org_id, kind, id) DO UPDATE SET name = EXCLUDED.name, url = EXCLUDED.url, version = EXCLUDED.version "
        "WHERE display_names.version < EXCLUDED.version",
        org_id, kind, id_, name, url, version)


async def names_for_mail(conn: asyncpg.Connection, org_id: str, *, record_type: str | None, record_id: str | None,
                         hub_task_id: uuid.UUID | None, pm_task_id: str | None) -> Row:
    """record_name/record_url, project_name and parent_task_name of a refused task, as far as they are known."""
    row = await conn.fetchrow(
        "SELECT r.name AS record_name, r.url AS record_url, p.name AS project_name, "
        "       parent.fields->>'title' AS parent_task_name "
        "FROM (SELECT 1) one "
        "LEFT JOIN display_names r ON r.org_id = $1 AND r.kind = $2 AND r.id = $3 "
        "LEFT JOIN task_mappings m ON m.hub_task_id = $4 "
        "LEFT JOIN pm_tasks t ON t.org_id = $1 AND t.task_id = coalesce($5, m.pm_task_id) "
        "LEFT JOIN display_names p ON p.org_id = $1 AND p.kind = 'project' AND p.id = coalesce(m.project_id, t.project_id) "
        "LEFT JOIN pm_tasks parent ON parent.org_id = $1 AND parent.task_id = t.parent_task_id",
        org_id, record_type, record_id, hub_task_id, pm_task_id)
    return {k: v for k, v in dict(row).items() if v is not None} if row else {}


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


async def mapping(conn: asyncpg.Connection, org_id: str, hub_task_id: uuid.UUID) -> Row | None:
    """The mapping, locked; only within `org_id` (an id from another org's message finds nothing)."""
    return _row(await conn.fetchrow("SELECT * FROM task_mappings WHERE org_id = $1 AND hub_task_id = $2 FOR UPDATE",
                                    org_id, hub_task_id))


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
    """The mapping's state, versions, ids and command budget (a mapping row as read: `SELECT *`)."""
    await conn.execute(
        "UPDATE task_mappings SET pm_task_id = $2, crm_task_id = $3, state = $4, pm_version = $5, crm_version = $6, "
        "budget_window_start = $7, budget_used = $8, parked_at = $9, parked_reason = $10, "
        "updated_at = now() WHERE hub_task_id = $1",
        m["hub_task_id"], m["pm_task_id"], m["crm_task_id"], m["state"], m["pm_version"], m["crm_version"],
        m.get("budget_window_start"), m.get("budget_used") or 0, m.get("parked_at"), m.get("parked_reason"))


async def record_command(conn: asyncpg.Connection, *, command_id: uuid.UUID, hub_task_id: uuid.UUID, org_id: str,
                         target: str, kind: str, changes: dict[str, Any], source_at: dict[str, str],
                         acting_user_id: str | None, cause: str = "change",
                         reverts_command_id: uuid.UUID | None = None) -> None:
    await conn.execute(
        "INSERT INTO task_commands (command_id, hub_task_id, org_id, target, kind, changes, source_at, acting_user_id, "
        "cause, reverts_command_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        command_id, hub_task_id, org_id, target, kind, changes, source_at, acting_user_id, cause, reverts_command_id)


async def command(conn: asyncpg.Connection, org_id: str, command_id: uuid.UUID | None) -> Row | None:
    """A command the hub sent to `org_id`; an echo or refusal naming another org's command finds nothing."""
    if command_id is None:
        return None
    return _row(await conn.fetchrow("SELECT * FROM task_commands WHERE org_id = $1 AND command_id = $2", org_id, command_id))


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


async def history_of_task(conn: asyncpg.Connection, hub_task_id: uuid.UUID, *, after: int | None = None,
                          limit: int | None = None) -> list[Row]:
    """A task's decisions in order, `limit` of them after the id `after` (all when no limit: the CLI)."""
    rows = await conn.fetch("SELECT * FROM task_decisions WHERE hub_task_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                            hub_task_id, after or 0, limit)
    return [_decision_json(r) for r in rows]


async def history(conn: asyncpg.Connection, org_id: str, pm_task_id: str | None, crm_task_id: str | None,
                  *, after: int | None = None, limit: int | None = None) -> list[Row]:
    """Decisions about a PM or CRM task, including those of the mappings it belongs to."""
    rows = await conn.fetch(
        "SELECT * FROM task_decisions d WHERE d.org_id = $1 AND ("
        " ($2::text IS NOT NULL AND (d.pm_task_id = $2 OR d.hub_task_id IN "
        "   (SELECT hub_task_id FROM task_mappings WHERE org_id = $1 AND pm_task_id = $2)))"
        " OR ($3::text IS NOT NULL AND (d.crm_task_id = $3 OR d.hub_task_id IN "
        "   (SELECT hub_task_id FROM task_mappings WHERE org_id = $1 AND crm_task_id = $3)))"
        ") AND d.id > $4 ORDER BY d.id LIMIT $5", org_id, pm_task_id, crm_task_id, after or 0, limit)
    return [_decision_json(r) for r in rows]


def dumps(rows: list[Row]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=2)


# --- fewer round trips on the hot paths ----------------------------------------------------
# Each statement is a round trip to the database inside the batch transaction, and the
# handlers used to send about ten per event. The helpers below read, in one statement,
# everything a handler needs that it would otherwise read one by one (all of it read-only
# and not written by the handler before it would have been read), and `Writes` sends a
# handler's buffered writes as one statement. Nothing is cached across events.

_PREFIX = "ctx__"


def _split(r: asyncpg.Record) -> tuple[Row, Row]:
    """(own columns without the prefix, the other columns) of a row mixing a table's `*` with computed columns."""
    own: Row = {}
    rest: Row = {}
    for k, v in r.items():
        if k.startswith(_PREFIX):
            own[k[len(_PREFIX):]] = v
        else:
            rest[k] = v
    return own, rest


def _integration_of(own: Row) -> Row | None:
    return {"enabled": own["integ_enabled"], "portal_id": own["integ_portal"]} if own["integ_exists"] else None


async def pm_task_context(conn: asyncpg.Connection, org_id: str, task_id: str, portal_id: str, project_id: str,
                          owner_portal_user_id: str | None, command_id: uuid.UUID | None) -> Row:
    """What `pm.task.upserted` reads before it writes: the applied version of the task, the owner's CRM user,
    the integration, the command it echoes (or None) and the project's linked records (in `linked_records` order)."""
    r = await conn.fetchrow(
        "SELECT c.*, "
        "(SELECT version FROM pm_tasks WHERE org_id = $1 AND task_id = $2) AS ctx__snap_version, "
        "(SELECT crm_user_id FROM users WHERE org_id = $1 AND portal_user_id = $5 "
        " ORDER BY active DESC, crm_user_id LIMIT 1) AS ctx__owner, "
        "i.org_id IS NOT NULL AS ctx__integ_exists, i.enabled AS ctx__integ_enabled, i.portal_id AS ctx__integ_portal, "
        "ARRAY(SELECT record_type FROM links WHERE org_id = $1 AND portal_id = $3 AND project_id = $4 AND linked "
        "      ORDER BY record_type, record_id) AS ctx__link_types, "
        "ARRAY(SELECT record_id FROM links WHERE org_id = $1 AND portal_id = $3 AND project_id = $4 AND linked "
        "      ORDER BY record_type, record_id) AS ctx__link_ids "
        "FROM (SELECT 1) AS one LEFT JOIN integrations i ON i.org_id = $1 "
        "LEFT JOIN task_commands c ON c.command_id = $6 AND c.org_id = $1",
        org_id, task_id, portal_id, project_id, owner_portal_user_id, command_id)
    assert r is not None
    own, c = _split(r)
    own["command"] = c if c.get("command_id") is not None else None
    own["integration"] = _integration_of(own)
    own["linked_records"] = [{"record_type": t, "record_id": i} for t, i in zip(own["link_types"], own["link_ids"])]
    return own


_SAVE_PM_TASK = (
    "INSERT INTO pm_tasks (org_id, task_id, portal_id, project_id, parent_task_id, status, recurring, add_to_crm, "
    "fields, modified_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
    "ON CONFLICT (org_id, task_id) DO UPDATE SET portal_id = EXCLUDED.portal_id, project_id = EXCLUDED.project_id, "
    "parent_task_id = EXCLUDED.parent_task_id, status = EXCLUDED.status, recurring = EXCLUDED.recurring, "
    "add_to_crm = EXCLUDED.add_to_crm, fields = EXCLUDED.fields, modified_at = EXCLUDED.modified_at, "
    "version = EXCLUDED.version, deleted = false")


async def save_pm_task_lock_mappings(conn: asyncpg.Connection, org_id: str, p: Any, fields: dict[str, Any]) -> tuple[Row, list[Row]]:
    """`save_pm_task` then `mappings_of_pm_task` (FOR UPDATE) in one statement: (the saved snapshot, the mappings)."""
    rows = await conn.fetch(
        "WITH saved AS (" + _SAVE_PM_TASK + " RETURNING modified_at) "
        "SELECT saved.modified_at AS ctx__modified_at, m.* FROM saved LEFT JOIN LATERAL ("
        " SELECT * FROM task_mappings WHERE org_id = $1 AND pm_task_id = $2 ORDER BY record_type, record_id FOR UPDATE"
        ") m ON true ORDER BY m.record_type, m.record_id",
        org_id, p.id, p.portal_id, p.project_id, p.parent_task_id, p.status, p.recurring, p.add_to_crm, fields,
        p.modified_at, p.version)
    mappings: list[Row] = []
    modified_at = None
    for r in rows:
        own, m = _split(r)
        modified_at = own["modified_at"]
        if m.get("hub_task_id") is not None:
            mappings.append(m)
    # the row just written, as `pm_task` would read it back
    snap = {"org_id": org_id, "task_id": p.id, "portal_id": p.portal_id, "project_id": p.project_id,
            "parent_task_id": p.parent_task_id, "status": p.status, "recurring": p.recurring, "add_to_crm": p.add_to_crm,
            "fields": fields, "modified_at": modified_at, "version": p.version, "deleted": False}
    return snap, mappings


async def crm_task_context(conn: asyncpg.Connection, org_id: str, task_id: str, command_id: uuid.UUID | None) -> Row:
    """What `crm.task.upserted` reads first: the applied version of the task, the integration, the command it echoes."""
    r = await conn.fetchrow(
        "SELECT c.*, "
        "(SELECT version FROM crm_tasks WHERE org_id = $1 AND task_id = $2) AS ctx__snap_version, "
        "i.org_id IS NOT NULL AS ctx__integ_exists, i.enabled AS ctx__integ_enabled, i.portal_id AS ctx__integ_portal "
        "FROM (SELECT 1) AS one LEFT JOIN integrations i ON i.org_id = $1 "
        "LEFT JOIN task_commands c ON c.command_id = $3 AND c.org_id = $1",
        org_id, task_id, command_id)
    assert r is not None
    own, c = _split(r)
    own["command"] = c if c.get("command_id") is not None else None
    own["integration"] = _integration_of(own)
    return own


async def save_crm_task_lock_mapping(conn: asyncpg.Connection, org_id: str, task_id: str, record_type: str | None,
                                     record_id: str | None, version: int) -> tuple[Row | None, Row]:
    """`save_crm_task`, `mapping_of_crm_task` (FOR UPDATE) and the reads of the S10/S11 guard (the PM task, its
    parent, the project) in one statement: (the mapping or None, {pm_parent_task_id, parent_closed, schedule_fixed})."""
    r = await conn.fetchrow(
        "WITH saved AS ("
        " INSERT INTO crm_tasks (org_id, task_id, record_type, record_id, version, deleted) "
        " VALUES ($1, $2, coalesce($3, ''), coalesce($4, ''), $5, false) ON CONFLICT (org_id, task_id) DO UPDATE SET "
        " record_type = coalesce($3, crm_tasks.record_type), record_id = coalesce($4, crm_tasks.record_id), "
        " version = EXCLUDED.version, deleted = EXCLUDED.deleted RETURNING 1 AS done) "
        "SELECT m.* FROM saved LEFT JOIN LATERAL ("
        " SELECT tm.*, ps.parent_task_id AS ctx__pm_parent_task_id, "
        " pp.task_id IS NOT NULL AS ctx__parent_exists, pp.status AS ctx__parent_status, pp.deleted AS ctx__parent_deleted, "
        " pr.schedule_fixed AS ctx__schedule_fixed "
        " FROM task_mappings tm "
        " LEFT JOIN pm_tasks ps ON ps.org_id = tm.org_id AND ps.task_id = tm.pm_task_id "
        " LEFT JOIN pm_tasks pp ON pp.org_id = tm.org_id AND pp.task_id = ps.parent_task_id "
        " LEFT JOIN projects pr ON pr.org_id = tm.org_id AND pr.project_id = tm.project_id "
        " WHERE tm.org_id = $1 AND tm.crm_task_id = $2 FOR UPDATE OF tm"
        ") m ON true",
        org_id, task_id, record_type, record_id, version)
    assert r is not None
    own, m = _split(r)
    if m.get("hub_task_id") is None:
        return None, own
    return m, own


class Writes:
    """A handler's writes, buffered and sent as one statement by `flush` (same transaction, same order of effects).

    Stands in for the connection in the storage functions that only `execute` (INSERT/UPDATE without a result).
    The decisions become one multi-row INSERT in the order they were made (their ids keep that order); the other
    writes become data-modifying CTEs of that statement. Two UPDATEs with the same text could hit the same row,
    which one statement cannot do twice, so a second one flushes the first. Flush before reading anything written.
    """

    _DECISION = "INSERT INTO task_decisions "

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.ops: list[tuple[str, tuple[Any, ...]]] = []
        self.decisions: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> None:
        if sql.startswith(self._DECISION):
            self.decisions.append((sql, args))
            return
        if sql.startswith("UPDATE") and any(s == sql for s, _ in self.ops):
            await self.flush()
        self.ops.append((sql, args))

    async def flush(self) -> None:
        ops, decisions = self.ops, self.decisions
        self.ops, self.decisions = [], []
        if not ops and not decisions:
            return
        if len(ops) + len(decisions) == 1:
            sql, args = (ops or decisions)[0]
            await self.conn.execute(sql, *args)
            return
        params: list[Any] = []

        def renumber(sql: str, args: tuple[Any, ...]) -> str:
            base = len(params)
            params.extend(args)
            return re.sub(r"\$(\d+)", lambda mm: f"${int(mm.group(1)) + base}", sql)

        ctes = [f"w{i} AS ({renumber(sql, args)})" for i, (sql, args) in enumerate(ops)]
        if decisions:
            head, _, _ = decisions[0][0].partition(" VALUES ")
            rows = []
            for sql, args in decisions:
                _, _, values = sql.partition(" VALUES ")
                rows.append(renumber(values, args))
            main = f"{head} VALUES {', '.join(rows)}"
        else:
            main = "SELECT 1"
        sql = (f"WITH {', '.join(ctes)} " if ctes else "") + main
        await self.conn.execute(sql, *params)
