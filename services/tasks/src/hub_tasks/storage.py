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
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

import asyncpg

from hub_platform.batch import LoadRound, upsert_rows
from hub_tasks.domain import State
from hub_tasks.records import (Command, CrmTask, Decision, DisplayName, Integration, Link, Mapping, PmTask, Project,
                               User)

Row = dict[str, Any]
R = TypeVar("R")
Keys = Sequence[tuple[str, ...]]


def _columns(keys: Keys, width: int) -> list[list[str]]:
    """Composite keys as one array per column (for `unnest($1::text[], $2::text[], ...)`)."""
    return [[k[i] for k in keys] for i in range(width)]


def _of(cls: type, rows: Sequence[asyncpg.Record]) -> list[Any]:
    return [cls(**dict(r)) for r in rows]


# --- loads ---------------------------------------------------------------------------------
#
# Each load adds its sub-select to a `LoadRound` (the batch's first loads go out as one statement, see
# TasksState._preload) and has a function that types its rows, and the same load on its own: a `KeyedLoad` for
# a table read by its composite key, `query_*` / `*_of` / `load_*` for the others.


def _in(r: LoadRound, columns: str, keys: Keys, width: int) -> str:
    """`(columns) IN (the composite keys)`, the keys as one text array parameter per column."""
    arrays = ", ".join(r.arg(col, "text[]") for col in _columns(keys, width))
    return f"({columns}) IN (SELECT * FROM unnest({arrays}))"


async def _alone(conn: asyncpg.Connection, query: Callable[..., None], name: str, *keys: Any) -> list[asyncpg.Record]:
    r = LoadRound()
    query(r, *keys)
    return (await r.fetch(conn))[name]


@dataclasses.dataclass(frozen=True)
class KeyedLoad(Generic[R]):
    """A table read by its composite text key: `query` adds the load to a round, `of` types what the round
    returned, `load` does both on its own."""

    table: str
    key: tuple[str, ...]
    row: type[R]

    def query(self, r: LoadRound, keys: Keys) -> None:
        columns = ", ".join(f"t.{c}" for c in self.key)
        r.add(self.table, f"SELECT t FROM {self.table} t WHERE {_in(r, columns, keys, len(self.key))}")

    def of(self, loaded: dict[str, list[asyncpg.Record]]) -> list[R]:
        return _of(self.row, loaded[self.table])

    async def load(self, conn: asyncpg.Connection, keys: Keys) -> list[R]:
        r = LoadRound()
        self.query(r, keys)
        return self.of(await r.fetch(conn))


PROJECTS = KeyedLoad("projects", ("org_id", "project_id"), Project)
DISPLAY_NAMES = KeyedLoad("display_names", ("org_id", "kind", "id"), DisplayName)
PM_TASKS = KeyedLoad("pm_tasks", ("org_id", "task_id"), PmTask)
CRM_TASKS = KeyedLoad("crm_tasks", ("org_id", "task_id"), CrmTask)


def query_integrations(r: LoadRound, org_ids: Sequence[str]) -> None:
    r.add("integrations", f"SELECT t FROM integrations t WHERE t.org_id = ANY({r.arg(list(org_ids), 'text[]')})")


def integrations_of(rows: Sequence[asyncpg.Record]) -> list[Integration]:
    return _of(Integration, rows)


async def load_integrations(conn: asyncpg.Connection, org_ids: Sequence[str]) -> list[Integration]:
    return integrations_of(await _alone(conn, query_integrations, "integrations", org_ids))


def query_users(r: LoadRound, by_crm: Keys, by_portal: Keys) -> None:
    """Users by (org, CRM user) and by (org, portal user): two loads, each an index lookup (one `OR` of both would
    scan the table); a user found by both comes twice, `users_of` keeps one."""
    r.add("users_by_crm", f"SELECT t FROM users t WHERE {_in(r, 't.org_id, t.crm_user_id', by_crm, 2)}")
    r.add("users_by_portal", f"SELECT t FROM users t WHERE {_in(r, 't.org_id, t.portal_user_id', by_portal, 2)}")


def users_of(loaded: dict[str, list[asyncpg.Record]]) -> list[User]:
    rows = {(r["org_id"], r["crm_user_id"]): r for r in (*loaded["users_by_crm"], *loaded["users_by_portal"])}
    return _of(User, list(rows.values()))


async def load_users(conn: asyncpg.Connection, by_crm: Keys, by_portal: Keys) -> list[User]:
    r = LoadRound()
    query_users(r, by_crm, by_portal)
    return users_of(await r.fetch(conn))


def query_links(r: LoadRound, by_project: Keys, by_record: Keys) -> None:
    """Every link row (linked or not) of the (org, project)s and of the (org, record type, record id)s: two loads,
    as for users; `links_of` keeps one of a row found by both."""
    r.add("links_by_project", f"SELECT t FROM links t WHERE {_in(r, 't.org_id, t.project_id', by_project, 2)}")
    r.add("links_by_record", f"SELECT t FROM links t WHERE {_in(r, 't.org_id, t.record_type, t.record_id', by_record, 3)}")


def links_of(loaded: dict[str, list[asyncpg.Record]]) -> list[Link]:
    rows = {(r["org_id"], r["project_id"], r["record_type"], r["record_id"]): r
            for r in (*loaded["links_by_project"], *loaded["links_by_record"])}
    return _of(Link, list(rows.values()))


async def load_links(conn: asyncpg.Connection, by_project: Keys, by_record: Keys) -> list[Link]:
    r = LoadRound()
    query_links(r, by_project, by_record)
    return links_of(await r.fetch(conn))


async def load_flagged_pm_tasks(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[PmTask]:
    """The PM tasks of a portal a resync may back-fill (flagged, not recurring, not deleted)."""
    return _of(PmTask, await conn.fetch(
        "SELECT * FROM pm_tasks WHERE org_id = $1 AND portal_id = $2 AND add_to_crm AND NOT recurring AND NOT deleted",
        org_id, portal_id))


_MAPPING_COLUMNS = [f.name for f in dataclasses.fields(Mapping)]


def _mapping(r: asyncpg.Record) -> Mapping:
    d = {k: r[k] for k in _MAPPING_COLUMNS}
    d["state"] = State.from_json(d["state"])
    return Mapping(**d)


def query_mappings(r: LoadRound, *, by_pm: Keys = (), by_crm: Keys = (), hub_task_ids: Sequence[uuid.UUID] = (),
                   of_commands: str | None = None) -> None:
    """Mappings by (org, PM task), (org, CRM task), id, or the ids the commands `of_commands` (a uuid[] placeholder
    of the same round) were sent for, locked for the batch (another replica handling the other side's key waits
    instead of overwriting)."""
    by_command = f" UNION ALL SELECT c.hub_task_id FROM task_commands c WHERE c.command_id = ANY({of_commands})" if of_commands else ""
    r.add("task_mappings",
          "SELECT t FROM task_mappings t WHERE t.hub_task_id IN ("
          f" SELECT m.hub_task_id FROM task_mappings m WHERE {_in(r, 'm.org_id, m.pm_task_id', by_pm, 2)}"
          f" UNION ALL SELECT m.hub_task_id FROM task_mappings m WHERE {_in(r, 'm.org_id, m.crm_task_id', by_crm, 2)}"
          f" UNION ALL SELECT unnest({r.arg(list(hub_task_ids), 'uuid[]')}){by_command}"
          ") ORDER BY t.hub_task_id FOR UPDATE")


def mappings_of(rows: Sequence[asyncpg.Record]) -> list[Mapping]:
    return [_mapping(r) for r in rows]


async def load_mappings(conn: asyncpg.Connection, *, by_pm: Keys = (), by_crm: Keys = (),
                        hub_task_ids: Sequence[uuid.UUID] = ()) -> list[Mapping]:
    r = LoadRound()
    query_mappings(r, by_pm=by_pm, by_crm=by_crm, hub_task_ids=hub_task_ids)
    return mappings_of((await r.fetch(conn))["task_mappings"])


async def load_mappings_of_org(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[tuple[datetime, Mapping]]:
    """Every mapping of a portal with its creation time (the order a resync walks them in), locked."""
    rows = await conn.fetch("SELECT * FROM task_mappings WHERE org_id = $1 AND portal_id = $2 "
                            "ORDER BY created_at, hub_task_id FOR UPDATE", org_id, portal_id)
    return [(r["created_at"], _mapping(r)) for r in rows]


def query_commands(r: LoadRound, command_ids: Sequence[uuid.UUID]) -> str:
    """Returns the placeholder of the ids, for `query_mappings(of_commands=…)` in the same round."""
    ids = r.arg(list(command_ids), "uuid[]")
    r.add("task_commands", f"SELECT t FROM task_commands t WHERE t.command_id = ANY({ids})")
    return ids


_COMMAND_COLUMNS = [f.name for f in dataclasses.fields(Command)]


def commands_of(rows: Sequence[asyncpg.Record]) -> list[Command]:
    return [Command(**{k: r[k] for k in _COMMAND_COLUMNS}) for r in rows]


async def load_commands(conn: asyncpg.Connection, command_ids: Sequence[uuid.UUID]) -> list[Command]:
    return commands_of(await _alone(conn, query_commands, "task_commands", command_ids))


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
