"""SQL of the task-mirroring service: set-based loads for the batch state, bulk writes for its flush, the history.

Every load takes the keys of a whole batch (`= ANY($1)`, or `unnest` of composite keys) and returns typed rows
(`hub_tasks.records`); every write takes the rows a batch changed and sends them in one pipelined statement.
Projections of other services' events are written only when newer (by `revision` or upstream `version`), so
stale and out-of-order copies change nothing.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import asyncpg

from hub_platform.batch import upsert_rows
from hub_tasks.domain import State
from hub_tasks.records import (Command, CrmTask, Decision, DisplayName, Integration, Link, Mapping, PmTask, Project,
                               User)

Row = dict[str, Any]
Keys = Sequence[tuple[str, ...]]


def _columns(keys: Keys, width: int) -> list[list[str]]:
    """Composite keys as one array per column (for `unnest($1::text[], $2::text[], ...)`)."""
    return [[k[i] for k in keys] for i in range(width)]


def _of(cls: type, rows: Sequence[asyncpg.Record]) -> list[Any]:
    return [cls(**dict(r)) for r in rows]


# --- loads ---------------------------------------------------------------------------------


async def load_integrations(conn: asyncpg.Connection, org_ids: Sequence[str]) -> list[Integration]:
    return _of(Integration, await conn.fetch("SELECT * FROM integrations WHERE org_id = ANY($1::text[])", list(org_ids)))


async def load_users(conn: asyncpg.Connection, by_crm: Keys, by_portal: Keys) -> list[User]:
    """Users by (org, CRM user) and by (org, portal user)."""
    rows = await conn.fetch(
        "SELECT u.* FROM users u JOIN unnest($1::text[], $2::text[]) k(o, i) ON u.org_id = k.o AND u.crm_user_id = k.i "
        "UNION SELECT u.* FROM users u JOIN unnest($3::text[], $4::text[]) k(o, i) "
        "ON u.org_id = k.o AND u.portal_user_id = k.i",
        *_columns(by_crm, 2), *_columns(by_portal, 2))
    return _of(User, rows)


async def load_projects(conn: asyncpg.Connection, keys: Keys) -> list[Project]:
    rows = await conn.fetch("SELECT * FROM projects WHERE (org_id, project_id) IN "
                            "(SELECT * FROM unnest($1::text[], $2::text[]))", *_columns(keys, 2))
    return _of(Project, rows)


async def load_links(conn: asyncpg.Connection, by_project: Keys, by_record: Keys) -> list[Link]:
    """Every link row (linked or not) of the (org, project)s and of the (org, record type, record id)s."""
    rows = await conn.fetch(
        "SELECT l.* FROM links l JOIN unnest($1::text[], $2::text[]) k(o, p) ON l.org_id = k.o AND l.project_id = k.p "
        "UNION SELECT l.* FROM links l JOIN unnest($3::text[], $4::text[], $5::text[]) k(o, t, i) "
        "ON l.org_id = k.o AND l.record_type = k.t AND l.record_id = k.i",
        *_columns(by_project, 2), *_columns(by_record, 3))
    return _of(Link, rows)


async def load_display_names(conn: asyncpg.Connection, keys: Keys) -> list[DisplayName]:
    rows = await conn.fetch("SELECT * FROM display_names WHERE (org_id, kind, id) IN "
                            "(SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))", *_columns(keys, 3))
    return _of(DisplayName, rows)


async def load_pm_tasks(conn: asyncpg.Connection, keys: Keys) -> list[PmTask]:
    rows = await conn.fetch("SELECT * FROM pm_tasks WHERE (org_id, task_id) IN "
                            "(SELECT * FROM unnest($1::text[], $2::text[]))", *_columns(keys, 2))
    return _of(PmTask, rows)


async def load_flagged_pm_tasks(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[PmTask]:
    """The PM tasks of a portal a resync may back-fill (flagged, not recurring, not deleted)."""
    return _of(PmTask, await conn.fetch(
        "SELECT * FROM pm_tasks WHERE org_id = $1 AND portal_id = $2 AND add_to_crm AND NOT recurring AND NOT deleted",
        org_id, portal_id))


async def load_crm_tasks(conn: asyncpg.Connection, keys: Keys) -> list[CrmTask]:
    rows = await conn.fetch("SELECT * FROM crm_tasks WHERE (org_id, task_id) IN "
                            "(SELECT * FROM unnest($1::text[], $2::text[]))", *_columns(keys, 2))
    return _of(CrmTask, rows)


_MAPPING_COLUMNS = [f.name for f in dataclasses.fields(Mapping)]


def _mapping(r: asyncpg.Record) -> Mapping:
    d = {k: r[k] for k in _MAPPING_COLUMNS}
    d["state"] = State.from_json(d["state"])
    return Mapping(**d)


async def load_mappings(conn: asyncpg.Connection, *, by_pm: Keys = (), by_crm: Keys = (),
                        hub_task_ids: Sequence[uuid.UUID] = ()) -> list[Mapping]:
    """Mappings by (org, PM task), (org, CRM task) or id, locked for the batch (another replica handling the
    other side's key waits instead of overwriting)."""
    rows = await conn.fetch(
        "SELECT * FROM task_mappings WHERE hub_task_id IN ("
        " SELECT m.hub_task_id FROM task_mappings m JOIN unnest($1::text[], $2::text[]) k(o, t) "
        " ON m.org_id = k.o AND m.pm_task_id = k.t "
        " UNION ALL SELECT m.hub_task_id FROM task_mappings m JOIN unnest($3::text[], $4::text[]) k(o, t) "
        " ON m.org_id = k.o AND m.crm_task_id = k.t "
        " UNION ALL SELECT unnest($5::uuid[])"
        ") ORDER BY hub_task_id FOR UPDATE",
        *_columns(by_pm, 2), *_columns(by_crm, 2), list(hub_task_ids))
    return [_mapping(r) for r in rows]


async def load_mappings_of_org(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[tuple[datetime, Mapping]]:
    """Every mapping of a portal with its creation time (the order a resync walks them in), locked."""
    rows = await conn.fetch("SELECT * FROM task_mappings WHERE org_id = $1 AND portal_id = $2 "
                            "ORDER BY created_at, hub_task_id FOR UPDATE", org_id, portal_id)
    return [(r["created_at"], _mapping(r)) for r in rows]


async def load_commands(conn: asyncpg.Connection, command_ids: Sequence[uuid.UUID]) -> list[Command]:
    rows = await conn.fetch("SELECT * FROM task_commands WHERE command_id = ANY($1::uuid[])", list(command_ids))
    return [Command(**{f.name: r[f.name] for f in dataclasses.fields(Command)}) for r in rows]


# --- bulk writes ---------------------------------------------------------------------------


async def save_integrations(conn: asyncpg.Connection, rows: Sequence[Integration]) -> None:
    await upsert_rows(conn, "integrations", rows, key=("org_id",), version="revision")


async def save_users(conn: asyncpg.Connection, rows: Sequence[User]) -> None:
    await upsert_rows(conn, "users", rows, key=("org_id", "crm_user_id"), version="revision")


async def save_projects(conn: asyncpg.Connection, rows: Sequence[Project]) -> None:
    await upsert_rows(conn, "projects", rows, key=("org_id", "project_id"), version="version")


async def save_links(conn: asyncpg.Connection, rows: Sequence[Link]) -> None:
    await upsert_rows(conn, "links", rows, key=("org_id", "project_id", "record_type", "record_id"), version="revision")


async def save_display_names(conn: asyncpg.Connection, rows: Sequence[DisplayName]) -> None:
    await upsert_rows(conn, "display_names", rows, key=("org_id", "kind", "id"), version="version")


async def save_pm_tasks(conn: asyncpg.Connection, rows: Sequence[PmTask]) -> None:
    await upsert_rows(conn, "pm_tasks", rows, key=("org_id", "task_id"), version="version")


async def save_crm_tasks(conn: asyncpg.Connection, rows: Sequence[CrmTask]) -> None:
    await upsert_rows(conn, "crm_tasks", rows, key=("org_id", "task_id"), version="version")


async def save_mappings(conn: asyncpg.Connection, rows: Sequence[Mapping]) -> None:
    """New and changed mappings (the ids, state, versions and budget; origin, project and record never change)."""
    if not rows:
        return
    now = datetime.now(timezone.utc)
    await upsert_rows(
        conn, "task_mappings",
        [{**{c: getattr(m, c) for c in _MAPPING_COLUMNS}, "state": m.state.to_json(), "updated_at": now} for m in rows],
        key=("hub_task_id",),
        update=["pm_task_id", "crm_task_id", "state", "pm_version", "crm_version", "budget_window_start", "budget_used",
                "parked_at", "parked_reason", "updated_at"])


async def save_commands(conn: asyncpg.Connection, rows: Sequence[Command]) -> None:
    """New commands, and the outcome of commands an echo or a rejection answered."""
    await upsert_rows(conn, "task_commands", rows, key=("command_id",), update=["outcome"])


async def save_decisions(conn: asyncpg.Connection, rows: Sequence[Decision]) -> None:
    """Inserted in the order they were taken (their ids keep that order: the history reads by id)."""
    if rows:
        await conn.executemany(
            "INSERT INTO task_decisions (org_id, hub_task_id, pm_task_id, crm_task_id, side, event_id, event_type, "
            "decision, reason_code, reason, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            [(d.org_id, d.hub_task_id, d.pm_task_id, d.crm_task_id, d.side, d.event_id, d.event_type, d.decision,
              d.reason_code, d.reason, d.fields) for d in rows])


# --- the history (HTTP API and CLI) -------------------------------------------------------------


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
