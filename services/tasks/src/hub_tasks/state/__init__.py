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

from hub_platform.batch import LoadRound
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
        # the first loads in one round trip (hub_platform.batch.LoadRound); the mappings include those of the
        # batch's commands, found by the same statement
        first = LoadRound()
        orgs_todo = sorted(o for o in orgs if o not in self.t.integrations)
        if orgs_todo:
            storage.query_integrations(first, orgs_todo)
        if users_crm or users_portal:
            storage.query_users(first, sorted(users_crm), sorted(users_portal))
        projects_todo = sorted(k for k in projects if k not in self.t.projects)
        if projects_todo:
            storage.PROJECTS.query(first, projects_todo)
        if links_project or links_record:
            storage.query_links(first, sorted(links_project), sorted(links_record))
        names_todo = sorted(k for k in names if k not in self.t.names)
        if names_todo:
            storage.DISPLAY_NAMES.query(first, names_todo)
        pm_todo = sorted(k for k in pm_tasks if k not in self.t.pm_tasks)
        if pm_todo:
            storage.PM_TASKS.query(first, pm_todo)
        crm_todo = sorted(k for k in crm_tasks if k not in self.t.crm_tasks)
        if crm_todo:
            storage.CRM_TASKS.query(first, crm_todo)
        commands_todo = sorted(i for i in commands if i not in self.t.commands)
        of_commands = storage.query_commands(first, commands_todo) if commands_todo else None
        pm_keys = {k for k in by_pm if k not in self.t.pm_loaded}
        crm_keys = {k for k in by_crm if k not in self.t.crm_loaded}
        if pm_keys or crm_keys or of_commands:
            storage.query_mappings(first, by_pm=sorted(pm_keys), by_crm=sorted(crm_keys), of_commands=of_commands)
        loaded = await first.fetch(self.conn)

        if orgs_todo:
            self._take_integrations(orgs_todo, storage.integrations_of(loaded["integrations"]))
        if users_crm or users_portal:
            self._merge_users(storage.users_of(loaded), users_crm, users_portal)
        if projects_todo:
            self._take_projects(projects_todo, storage.PROJECTS.of(loaded))
        if links_project or links_record:
            self._merge_links(storage.links_of(loaded), links_project, links_record)
        if names_todo:
            self._take_names(names_todo, storage.DISPLAY_NAMES.of(loaded))
        if pm_todo:
            self._take_pm_tasks(pm_todo, storage.PM_TASKS.of(loaded))
        if crm_todo:
            self._take_crm_tasks(crm_todo, storage.CRM_TASKS.of(loaded))
        if commands_todo:
            self._take_commands(commands_todo, storage.commands_of(loaded["task_commands"]))
        if "task_mappings" in loaded:
            hub_ids = {c.hub_task_id for i in commands_todo if (c := self.t.commands[i]) is not None}
            self._take_mappings(storage.mappings_of(loaded["task_mappings"]), pm_keys, crm_keys, hub_ids)

        # what a CRM-side change of a mapped task checks (S10/S11): the PM task and its project, a second round
        mapped = [self.t.mappings[h] for k in by_crm if (h := self.t.by_crm.get(k)) is not None]
        pm_more = sorted({(m.org_id, m.pm_task_id) for m in mapped if m.pm_task_id is not None} - self.t.pm_tasks.keys())
        projects_more = sorted({(m.org_id, m.project_id) for m in mapped} - self.t.projects.keys())
        second = LoadRound()
        if pm_more:
            storage.PM_TASKS.query(second, pm_more)
        if projects_more:
            storage.PROJECTS.query(second, projects_more)
        loaded = await second.fetch(self.conn)
        if pm_more:
            self._take_pm_tasks(pm_more, storage.PM_TASKS.of(loaded))
        if projects_more:
            self._take_projects(projects_more, storage.PROJECTS.of(loaded))
