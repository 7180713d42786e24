"""The tasks service's batch state (`hub_platform.consumer.BatchState`): every row a batch's handlers need.

`TasksState.load` reads, for all events of a batch at once, the rows their handlers will read (one query per
table, in two rounds: the mappings need the commands' task ids). Handlers then read and change these typed
objects in record order, so an event sees what the events before it in the batch did; `flush` writes what
changed in bulk (one pipelined statement per table, in foreign-key order, decisions in the order taken).

Rows that cannot be known up front (a resync's mappings, a parent task, the names for an e-mail) are read
lazily, each at most once per batch; a read merges into what is held, never over it (what the batch changed
wins). Each table the state holds is written only through it while a batch runs.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from hub_schema import Event
from hub_schema.events import crm, identity, linking, pm
from hub_tasks import storage
from hub_tasks.state.projections import ProjectionRows
from hub_tasks.state.tasks import TaskRows

NAMED_RECORDS = (crm.CrmAccountUpserted, crm.CrmDealUpserted, crm.CrmContactUpserted, crm.CrmLeadUpserted)


class TasksState(ProjectionRows, TaskRows):
    """The batch's rows (see the module docstring); lazy reads go through the batch's connection."""

    # --- BatchState ------------------------------------------------------------------------

    @classmethod
    async def load(cls, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> TasksState:
        state = cls(conn)
        await state._preload(events)
        return state

    def snapshot(self) -> Any:
        return copy.deepcopy(self.t)

    def restore(self, snapshot: Any) -> None:
        self.t = snapshot

    async def flush(self, conn: asyncpg.Connection) -> None:
        t, dirty = self.t, self.t.dirty
        t.dirty = {}

        def rows(table: str, held: dict[Any, Any]) -> list[Any]:
            return [held[k] for k in dirty.get(table, ())]

        await storage.save_integrations(conn, rows("integrations", t.integrations))
        await storage.save_users(conn, rows("users", t.users))
        await storage.save_projects(conn, rows("projects", t.projects))
        await storage.save_links(conn, rows("links", t.links))
        await storage.save_display_names(conn, rows("names", t.names))
        await storage.save_pm_tasks(conn, rows("pm_tasks", t.pm_tasks))
        await storage.save_crm_tasks(conn, rows("crm_tasks", t.crm_tasks))
        await storage.save_mappings(conn, rows("mappings", t.mappings))
        await storage.save_commands(conn, rows("commands", t.commands))
        decisions, t.decisions = t.decisions, []
        await storage.save_decisions(conn, decisions)

    # --- loading ---------------------------------------------------------------------------

    async def _preload(self, events: Sequence[Event[Any]]) -> None:
        orgs: set[str] = set()
        users_crm: set[tuple[str, str]] = set()
        users_portal: set[tuple[str, str]] = set()
        projects: set[tuple[str, str]] = set()
        links_project: set[tuple[str, str]] = set()
        links_record: set[tuple[str, str, str]] = set()
        names: set[tuple[str, str, str]] = set()
        pm_tasks: set[tuple[str, str]] = set()
        crm_tasks: set[tuple[str, str]] = set()
        by_pm: set[tuple[str, str]] = set()
        by_crm: set[tuple[str, str]] = set()
        commands: set[uuid.UUID] = set()
        for e in events:
            org, p = e.org_id, e.payload
            orgs.add(org)
            if isinstance(p, linking.LinkChanged):
                links_project.add((org, p.project_id))
            elif isinstance(p, identity.UserAccessChanged):
                users_crm.add((org, p.crm_user_id))
            elif isinstance(p, pm.PmProjectUpserted | pm.PmProjectDeleted):
                projects.add((org, p.id))
                names.add((org, "project", p.id))
            elif isinstance(p, pm.PmTaskUpserted):
                pm_tasks.add((org, p.id))
                by_pm.add((org, p.id))
                if p.parent_task_id:
                    by_pm.add((org, p.parent_task_id))
                if p.owner_id:
                    users_portal.add((org, p.owner_id))
                links_project.add((org, p.project_id))
                if p.command_id:
                    commands.add(p.command_id)
            elif isinstance(p, pm.PmTaskDeleted):
                pm_tasks.add((org, p.id))
                by_pm.add((org, p.id))
            elif isinstance(p, pm.PmCommentAdded):
                by_pm.add((org, p.task_id))
            elif isinstance(p, crm.CrmTaskUpserted):
                crm_tasks.add((org, p.id))
                by_crm.add((org, p.id))
                if p.parent_task_id:
                    by_crm.add((org, p.parent_task_id))
                users_crm.update((org, u) for u in (p.acting_user_id, p.created_by, p.owner_id) if u)
                links_record.add((org, p.record_type, p.record_id))
                if p.command_id:
                    commands.add(p.command_id)
            elif isinstance(p, crm.CrmTaskDeleted):
                crm_tasks.add((org, p.id))
                by_crm.add((org, p.id))
            elif isinstance(p, pm.PmCommandRejected | crm.CrmCommandRejected):
                commands.add(p.command_id)
            elif isinstance(p, NAMED_RECORDS):
                names.add((org, e.event_type.split(".")[1], p.id))
        await self._load_integrations(orgs)
        if users_crm or users_portal:
            self._merge_users(await storage.load_users(self.conn, sorted(users_crm), sorted(users_portal)),
                              users_crm, users_portal)
        await self._load_projects(projects)
        if links_project or links_record:
            self._merge_links(await storage.load_links(self.conn, sorted(links_project), sorted(links_record)),
                              links_project, links_record)
        await self._load_names(names)
        await self._load_pm_tasks(pm_tasks)
        await self._load_crm_tasks(crm_tasks)
        await self._load_commands(commands)
        hub_ids = {c.hub_task_id for c in self.t.commands.values() if c is not None}
        await self._load_mappings(by_pm, by_crm, hub_ids)
        # what a CRM-side change of a mapped task checks (S10/S11): the PM task and its project
        mapped = [self.t.mappings[h] for k in by_crm if (h := self.t.by_crm.get(k)) is not None]
        await self._load_pm_tasks({(m.org_id, m.pm_task_id) for m in mapped if m.pm_task_id is not None})
        await self._load_projects({(m.org_id, m.project_id) for m in mapped})

