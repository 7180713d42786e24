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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import asyncpg

from hub_schema import Event
from hub_schema.events import crm, identity, linking, pm
from hub_tasks import storage
from hub_tasks.records import (Command, CrmTask, Decision, DisplayName, Integration, Link, Mapping, PmTask, Project,
                               User)

NAMED_RECORDS = (crm.CrmAccountUpserted, crm.CrmDealUpserted, crm.CrmContactUpserted, crm.CrmLeadUpserted)
LATE = datetime.max.replace(tzinfo=timezone.utc)  # a mapping created in this batch sorts after the stored ones


@dataclass
class Tables:
    """What a batch holds; None = known not to exist. `dirty` names the keys `flush` writes, per table."""

    integrations: dict[str, Integration | None] = field(default_factory=dict)
    users: dict[tuple[str, str], User | None] = field(default_factory=dict)
    users_by_portal: set[tuple[str, str]] = field(default_factory=set)
    projects: dict[tuple[str, str], Project | None] = field(default_factory=dict)
    links: dict[tuple[str, str, str, str], Link] = field(default_factory=dict)
    links_by_project: set[tuple[str, str]] = field(default_factory=set)
    links_by_record: set[tuple[str, str, str]] = field(default_factory=set)
    names: dict[tuple[str, str, str], DisplayName | None] = field(default_factory=dict)
    pm_tasks: dict[tuple[str, str], PmTask | None] = field(default_factory=dict)
    flagged: set[tuple[str, str]] = field(default_factory=set)
    crm_tasks: dict[tuple[str, str], CrmTask | None] = field(default_factory=dict)
    mappings: dict[uuid.UUID, Mapping] = field(default_factory=dict)
    created_at: dict[uuid.UUID, datetime] = field(default_factory=dict)
    by_pm: dict[tuple[str, str], set[uuid.UUID]] = field(default_factory=dict)
    by_crm: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    pm_loaded: set[tuple[str, str]] = field(default_factory=set)
    crm_loaded: set[tuple[str, str]] = field(default_factory=set)
    ids_loaded: set[uuid.UUID] = field(default_factory=set)
    orgs_loaded: set[tuple[str, str]] = field(default_factory=set)
    commands: dict[uuid.UUID, Command | None] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    dirty: dict[str, set[Any]] = field(default_factory=dict)


def _newer(existing: Any, version: int, attr: str = "version") -> bool:
    return existing is None or getattr(existing, attr) < version


class TasksState:
    """The batch's rows (see the module docstring); lazy reads go through the batch's connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.t = Tables()

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

    def _touch(self, table: str, key: Any) -> None:
        self.t.dirty.setdefault(table, set()).add(key)

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

    async def _load_integrations(self, orgs: set[str]) -> None:
        todo = sorted(o for o in orgs if o not in self.t.integrations)
        if todo:
            found = {i.org_id: i for i in await storage.load_integrations(self.conn, todo)}
            self.t.integrations.update({o: found.get(o) for o in todo})

    def _merge_users(self, users: list[User], by_crm: set[tuple[str, str]], by_portal: set[tuple[str, str]]) -> None:
        for k in by_crm:
            self.t.users.setdefault(k, None)
        for u in users:
            if self.t.users.get((u.org_id, u.crm_user_id)) is None:
                self.t.users[(u.org_id, u.crm_user_id)] = u
        self.t.users_by_portal |= by_portal

    async def _load_projects(self, keys: set[tuple[str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.projects)
        if todo:
            found = {(r.org_id, r.project_id): r for r in await storage.load_projects(self.conn, todo)}
            self.t.projects.update({k: found.get(k) for k in todo})

    def _merge_links(self, links: list[Link], by_project: set[tuple[str, str]],
                     by_record: set[tuple[str, str, str]]) -> None:
        for link in links:
            self.t.links.setdefault((link.org_id, link.project_id, link.record_type, link.record_id), link)
        self.t.links_by_project |= by_project
        self.t.links_by_record |= by_record

    async def _load_names(self, keys: set[tuple[str, str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.names)
        if todo:
            found = {(r.org_id, r.kind, r.id): r for r in await storage.load_display_names(self.conn, todo)}
            self.t.names.update({k: found.get(k) for k in todo})

    async def _load_pm_tasks(self, keys: set[tuple[str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.pm_tasks)
        if todo:
            found = {(r.org_id, r.task_id): r for r in await storage.load_pm_tasks(self.conn, todo)}
            self.t.pm_tasks.update({k: found.get(k) for k in todo})

    async def _load_crm_tasks(self, keys: set[tuple[str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.crm_tasks)
        if todo:
            found = {(r.org_id, r.task_id): r for r in await storage.load_crm_tasks(self.conn, todo)}
            self.t.crm_tasks.update({k: found.get(k) for k in todo})

    async def _load_commands(self, ids: set[uuid.UUID]) -> None:
        todo = sorted(i for i in ids if i not in self.t.commands)
        if todo:
            found = {c.command_id: c for c in await storage.load_commands(self.conn, todo)}
            self.t.commands.update({i: found.get(i) for i in todo})

    async def _load_mappings(self, by_pm: set[tuple[str, str]], by_crm: set[tuple[str, str]],
                             ids: set[uuid.UUID]) -> None:
        by_pm, by_crm = by_pm - self.t.pm_loaded, by_crm - self.t.crm_loaded
        ids = ids - self.t.ids_loaded - self.t.mappings.keys()
        if not (by_pm or by_crm or ids):
            return
        for m in await storage.load_mappings(self.conn, by_pm=sorted(by_pm), by_crm=sorted(by_crm), hub_task_ids=sorted(ids)):
            self._hold(m, LATE)
        self.t.pm_loaded |= by_pm
        self.t.crm_loaded |= by_crm
        self.t.ids_loaded |= ids

    def _hold(self, m: Mapping, created_at: datetime) -> Mapping:
        """A mapping read or created; one already held stays as the batch changed it."""
        held = self.t.mappings.get(m.hub_task_id)
        if held is not None:
            return held
        self.t.mappings[m.hub_task_id] = m
        self.t.created_at[m.hub_task_id] = created_at
        if m.pm_task_id is not None:
            self.t.by_pm.setdefault((m.org_id, m.pm_task_id), set()).add(m.hub_task_id)
        if m.crm_task_id is not None:
            self.t.by_crm[(m.org_id, m.crm_task_id)] = m.hub_task_id
        return m

    # --- projections -------------------------------------------------------------------------

    async def integration(self, org_id: str) -> Integration | None:
        await self._load_integrations({org_id})
        return self.t.integrations[org_id]

    async def put_integration(self, row: Integration) -> None:
        if _newer(await self.integration(row.org_id), row.revision, "revision"):
            self.t.integrations[row.org_id] = row
            self._touch("integrations", row.org_id)

    async def user(self, org_id: str, crm_user_id: str | None) -> User | None:
        if crm_user_id is None:
            return None
        if (org_id, crm_user_id) not in self.t.users:
            self._merge_users(await storage.load_users(self.conn, [(org_id, crm_user_id)], []), {(org_id, crm_user_id)}, set())
        return self.t.users[(org_id, crm_user_id)]

    async def put_user(self, row: User) -> None:
        if _newer(await self.user(row.org_id, row.crm_user_id), row.revision, "revision"):
            self.t.users[(row.org_id, row.crm_user_id)] = row
            self._touch("users", (row.org_id, row.crm_user_id))

    async def crm_user_of_portal_user(self, org_id: str, portal_user_id: str) -> str | None:
        """The CRM user of a portal user (an active one first), as identity paired them."""
        if (org_id, portal_user_id) not in self.t.users_by_portal:
            self._merge_users(await storage.load_users(self.conn, [], [(org_id, portal_user_id)]), set(), {(org_id, portal_user_id)})
        found = sorted((not u.active, u.crm_user_id) for u in self.t.users.values()
                       if u is not None and u.org_id == org_id and u.portal_user_id == portal_user_id)
        return found[0][1] if found else None

    async def project(self, org_id: str, project_id: str) -> Project | None:
        await self._load_projects({(org_id, project_id)})
        return self.t.projects[(org_id, project_id)]

    async def put_project(self, row: Project) -> None:
        if _newer(await self.project(row.org_id, row.project_id), row.version):
            self.t.projects[(row.org_id, row.project_id)] = row
            self._touch("projects", (row.org_id, row.project_id))

    async def links_of_project(self, org_id: str, portal_id: str, project_id: str) -> list[Link]:
        """The project's linked records, by record type and id."""
        if (org_id, project_id) not in self.t.links_by_project:
            self._merge_links(await storage.load_links(self.conn, [(org_id, project_id)], []), {(org_id, project_id)}, set())
        return sorted((x for x in self.t.links.values() if x.org_id == org_id and x.project_id == project_id
                       and x.portal_id == portal_id and x.linked), key=lambda x: (x.record_type, x.record_id))

    async def links_of_record(self, org_id: str, portal_id: str, record_type: str, record_id: str) -> list[Link]:
        """The record's linked projects, by project id."""
        key = (org_id, record_type, record_id)
        if key not in self.t.links_by_record:
            self._merge_links(await storage.load_links(self.conn, [], [key]), set(), {key})
        return sorted((x for x in self.t.links.values() if (x.org_id, x.record_type, x.record_id) == key
                       and x.portal_id == portal_id and x.linked), key=lambda x: x.project_id)

    async def put_link(self, row: Link) -> None:
        await self.links_of_project(row.org_id, row.portal_id, row.project_id)
        key = (row.org_id, row.project_id, row.record_type, row.record_id)
        if _newer(self.t.links.get(key), row.revision, "revision"):
            self.t.links[key] = row
            self._touch("links", key)

    async def name(self, org_id: str, kind: str, id_: str | None) -> DisplayName | None:
        if id_ is None:
            return None
        await self._load_names({(org_id, kind, id_)})
        return self.t.names[(org_id, kind, id_)]

    async def put_name(self, row: DisplayName) -> None:
        if _newer(await self.name(row.org_id, row.kind, row.id), row.version):
            self.t.names[(row.org_id, row.kind, row.id)] = row
            self._touch("names", (row.org_id, row.kind, row.id))

    # --- upstream task snapshots ---------------------------------------------------------------

    async def pm_task(self, org_id: str, task_id: str | None) -> PmTask | None:
        if task_id is None:
            return None
        await self._load_pm_tasks({(org_id, task_id)})
        return self.t.pm_tasks[(org_id, task_id)]

    def save_pm_task(self, row: PmTask) -> None:
        self.t.pm_tasks[(row.org_id, row.task_id)] = row
        self._touch("pm_tasks", (row.org_id, row.task_id))

    async def flagged_pm_tasks(self, org_id: str, portal_id: str) -> list[PmTask]:
        """The portal's PM tasks a resync may back-fill, by task id."""
        if (org_id, portal_id) not in self.t.flagged:
            for r in await storage.load_flagged_pm_tasks(self.conn, org_id, portal_id):
                self.t.pm_tasks.setdefault((r.org_id, r.task_id), r)
            self.t.flagged.add((org_id, portal_id))
        return sorted((x for x in self.t.pm_tasks.values() if x is not None and x.org_id == org_id
                       and x.portal_id == portal_id and x.add_to_crm and not x.recurring and not x.deleted),
                      key=lambda x: x.task_id)

    async def crm_task(self, org_id: str, task_id: str) -> CrmTask | None:
        await self._load_crm_tasks({(org_id, task_id)})
        return self.t.crm_tasks[(org_id, task_id)]

    def save_crm_task(self, row: CrmTask) -> None:
        self.t.crm_tasks[(row.org_id, row.task_id)] = row
        self._touch("crm_tasks", (row.org_id, row.task_id))

    # --- mappings, commands, decisions ---------------------------------------------------------

    async def mapping(self, org_id: str, hub_task_id: uuid.UUID) -> Mapping | None:
        """The mapping, only within `org_id` (an id from another org's message finds nothing)."""
        await self._load_mappings(set(), set(), {hub_task_id})
        m = self.t.mappings.get(hub_task_id)
        return m if m is not None and m.org_id == org_id else None

    async def mappings_of_pm_task(self, org_id: str, pm_task_id: str) -> list[Mapping]:
        """The PM task's mappings, by record type and id."""
        await self._load_mappings({(org_id, pm_task_id)}, set(), set())
        held = [self.t.mappings[h] for h in self.t.by_pm.get((org_id, pm_task_id), ())]
        return sorted(held, key=lambda m: (m.record_type, m.record_id))

    async def mapping_of_crm_task(self, org_id: str, crm_task_id: str) -> Mapping | None:
        await self._load_mappings(set(), {(org_id, crm_task_id)}, set())
        h = self.t.by_crm.get((org_id, crm_task_id))
        return self.t.mappings[h] if h is not None else None

    async def mappings_of_org(self, org_id: str, portal_id: str) -> list[Mapping]:
        """Every mapping of the portal, oldest first (a resync's order)."""
        if (org_id, portal_id) not in self.t.orgs_loaded:
            for created_at, m in await storage.load_mappings_of_org(self.conn, org_id, portal_id):
                self._hold(m, created_at)
            self.t.orgs_loaded.add((org_id, portal_id))
        held = [m for m in self.t.mappings.values() if m.org_id == org_id and m.portal_id == portal_id]
        return sorted(held, key=lambda m: (self.t.created_at[m.hub_task_id], str(m.hub_task_id)))

    def add_mapping(self, m: Mapping) -> None:
        self._hold(m, LATE)
        self._touch("mappings", m.hub_task_id)

    def bind(self, m: Mapping, side: str, task_id: str, version: int) -> None:
        """The record the hub asked a side to create exists now: its id and version."""
        if side == "pm":
            m.pm_task_id, m.pm_version = task_id, version
            self.t.by_pm.setdefault((m.org_id, task_id), set()).add(m.hub_task_id)
        else:
            m.crm_task_id, m.crm_version = task_id, version
            self.t.by_crm[(m.org_id, task_id)] = m.hub_task_id
        self.save_mapping(m)

    def save_mapping(self, m: Mapping) -> None:
        self._touch("mappings", m.hub_task_id)

    async def command(self, org_id: str, command_id: uuid.UUID | None) -> Command | None:
        """A command the hub sent to `org_id`; an echo or refusal naming another org's command finds nothing."""
        if command_id is None:
            return None
        await self._load_commands({command_id})
        c = self.t.commands[command_id]
        return c if c is not None and c.org_id == org_id else None

    def add_command(self, c: Command) -> None:
        self.t.commands[c.command_id] = c
        self._touch("commands", c.command_id)

    def set_outcome(self, c: Command, outcome: str) -> None:
        """The first answer to a command is its outcome (an echo, or a rejection)."""
        if c.outcome is None:
            c.outcome = outcome
            self._touch("commands", c.command_id)

    def decide(self, d: Decision) -> None:
        self.t.decisions.append(d)
