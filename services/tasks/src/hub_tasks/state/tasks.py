"""The tasks part of the batch state: PM and CRM task snapshots, mappings, commands and decisions."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from hub_tasks import storage
from hub_tasks.records import Command, CrmTask, Decision, Mapping, PmTask
from hub_tasks.state.base import Rows

LATE = datetime.max.replace(tzinfo=timezone.utc)  # a mapping created in this batch sorts after the stored ones


class TaskRows(Rows):
    async def _load_pm_tasks(self, keys: set[tuple[str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.pm_tasks)
        if todo:
            self._take_pm_tasks(todo, await storage.PM_TASKS.load(self.conn, todo))

    def _take_pm_tasks(self, todo: list[tuple[str, str]], rows: list[PmTask]) -> None:
        found = {(r.org_id, r.task_id): r for r in rows}
        self.t.pm_tasks.update({k: found.get(k) for k in todo})

    async def _load_crm_tasks(self, keys: set[tuple[str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.crm_tasks)
        if todo:
            self._take_crm_tasks(todo, await storage.CRM_TASKS.load(self.conn, todo))

    def _take_crm_tasks(self, todo: list[tuple[str, str]], rows: list[CrmTask]) -> None:
        found = {(r.org_id, r.task_id): r for r in rows}
        self.t.crm_tasks.update({k: found.get(k) for k in todo})

    async def _load_commands(self, ids: set[uuid.UUID]) -> None:
        todo = sorted(i for i in ids if i not in self.t.commands)
        if todo:
            self._take_commands(todo, await storage.load_commands(self.conn, todo))

    def _take_commands(self, todo: list[uuid.UUID], rows: list[Command]) -> None:
        found = {c.command_id: c for c in rows}
        self.t.commands.update({i: found.get(i) for i in todo})

    async def _load_mappings(self, by_pm: set[tuple[str, str]], by_crm: set[tuple[str, str]],
                             ids: set[uuid.UUID]) -> None:
        # membership tests only: a lookup costs the same however many rows the batch holds
        by_pm = {k for k in by_pm if k not in self.t.pm_loaded}
        by_crm = {k for k in by_crm if k not in self.t.crm_loaded}
        ids = {i for i in ids if i not in self.t.ids_loaded and i not in self.t.mappings}
        if not (by_pm or by_crm or ids):
            return
        found = await storage.load_mappings(self.conn, by_pm=sorted(by_pm), by_crm=sorted(by_crm), hub_task_ids=sorted(ids))
        self._take_mappings(found, by_pm, by_crm, ids)

    def _take_mappings(self, rows: list[Mapping], by_pm: set[tuple[str, str]], by_crm: set[tuple[str, str]],
                       ids: set[uuid.UUID]) -> None:
        for m in rows:
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
