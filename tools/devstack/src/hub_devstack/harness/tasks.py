"""The tasks service under test: plays the CRM, the PM tool, linking and identity around it.

`hub_devstack.harness`'s ServiceHarness with the vocabulary of the tasks stories: the harness
produces the other services' and the upstreams' events, reads the service's commands and
events from their topics, and applies commands to small in-memory "upstream" records the way
a connector would (bumping the record version and echoing the change with the command's
`command_id`). The `world` fixture runs the real service in the test's event loop.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hub_devstack.harness import ServiceHarness, service_harness
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe
from hub_schema import topics
from hub_schema.events import crm, identity, linking, pm
from hub_schema.events.common import PermissionProfile, RecordRef

ORG = "org-1"
PORTAL = "portal-1"
T0 = datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc)
OUTPUTS = (topics.CRM_COMMANDS, topics.PM_COMMANDS, topics.TASKS_EVENTS, topics.NOTIFICATION_REQUESTS)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class World(ServiceHarness):
    """The tasks service under test and, around it, the CRM and the PM tool with their task records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pm: dict[str, pm.PmTaskUpserted] = {}
        self.crm: dict[str, crm.CrmTaskUpserted] = {}
        self._ids = itertools.count(1)
        self._rev = itertools.count(1)

    # --- producing ------------------------------------------------------------------

    async def service_key(self, org: str = ORG) -> str:
        """A new key for the org, announced as linking announces it (only its SHA-256 travels)."""
        import hashlib
        import secrets

        key = "hk_" + secrets.token_urlsafe(32)
        await self.send(linking.ServiceKeyRotated(key_id=uuid.uuid4(), key_sha256=hashlib.sha256(key.encode()).hexdigest(),
                                                  rotated_by="u-admin", rotated_at=datetime.now(timezone.utc)),
                        org=org, key=f"{org}:service_key")
        return key

    async def enable(self, enabled: bool = True) -> None:
        await self.send(linking.IntegrationChanged(state="enabled" if enabled else "disabled",
                                                   portal_id=PORTAL if enabled else None, changed_by="u-admin",
                                                   changed_at=T0, revision=next(self._rev)), key=f"{ORG}:integration")

    async def link(self, project_id: str, record_type: str, record_id: str, linked: bool = True) -> None:
        await self.send(linking.LinkChanged(portal_id=PORTAL, project_id=project_id,
                                            record=RecordRef(record_type=record_type, record_id=record_id),  # type: ignore[arg-type]
                                            linked=linked, revision=next(self._rev)), key=f"{ORG}:link")

    async def user(self, crm_user_id: str, portal_user_id: str | None, permissions: list[str], active: bool = True,
                   time_zone: str | None = None) -> None:
        await self.send(identity.UserAccessChanged(
            crm_user_id=crm_user_id, email=f"{crm_user_id}@example.com", name=f"User {crm_user_id}", locale="ja",
            time_zone=time_zone,
            active=active, is_admin=False, portal_id=PORTAL, portal_user_id=portal_user_id,
            profile=PermissionProfile(role="employee", permissions=permissions),  # type: ignore[arg-type]
            effective_from=T0, revision=next(self._rev)), key=f"{ORG}:user:{crm_user_id}")

    async def project(self, project_id: str, schedule_fixed: bool = False, version: int = 1) -> None:
        await self.send(pm.PmProjectUpserted(portal_id=PORTAL, id=project_id, name=f"Project {project_id}", owner_id="pu-1",
                                             status="active", progress_percent=0, schedule_fixed=schedule_fixed,
                                             modified_at=T0, version=version), origin="pm", key=f"project:{project_id}")

    async def standard_setup(self, *, schedule_fixed: bool = False) -> None:
        """Integration on, proj-1 linked to deal-1, u-1 (pu-1) may add tasks, u-2 (pu-2) may not."""
        await self.enable()
        await self.project("proj-1", schedule_fixed=schedule_fixed)
        await self.link("proj-1", "deal", "deal-1")
        await self.user("u-1", "pu-1", ["add_task"], time_zone="Europe/Berlin")
        await self.user("u-2", "pu-2", ["associate_project"])
        await self.settled()

    async def pm_task(self, task_id: str, minutes: float, **fields: Any) -> pm.PmTaskUpserted:
        """The PM tool creates or changes a task (a person did it: no command_id)."""
        prev = self.pm.get(task_id)
        base: dict[str, Any] = prev.model_dump() if prev else dict(
            portal_id=PORTAL, project_id="proj-1", id=task_id, title=f"Task {task_id}", priority="medium",
            status="open", owner_id="pu-1", recurring=False, add_to_crm=True, version=0)
        base.update(fields)
        base.update(version=base["version"] + 1, modified_at=at(minutes), command_id=None, acting_user_id="pu-1")
        task = pm.PmTaskUpserted(**base)
        self.pm[task_id] = task
        await self.send(task, origin="pm", key=f"task:{task_id}")
        return task

    async def crm_task(self, task_id: str, minutes: float, **fields: Any) -> crm.CrmTaskUpserted:
        prev = self.crm.get(task_id)
        base: dict[str, Any] = prev.model_dump() if prev else dict(
            id=task_id, record_type="deal", record_id="deal-1", subject=f"Task {task_id}", priority="medium",
            status="open", owner_id="u-1", created_by="u-1", add_to_pm=True, version=0)
        base.update(fields)
        acting = base.pop("acting", None) or base.get("created_by")
        base.update(version=base["version"] + 1, modified_at=at(minutes), command_id=None, acting_user_id=acting)
        task = crm.CrmTaskUpserted(**base)
        self.crm[task_id] = task
        await self.send(task, origin="crm", key=f"task:{task_id}")
        return task

    # --- reading -----------------------------------------------------------------------

    async def decisions(self, **where: Any) -> list[dict[str, Any]]:
        col, val = next(iter(where.items()))
        return await self.query(f"SELECT * FROM tasks.task_decisions WHERE {col} = $1 ORDER BY id", val)

    # --- playing the upstreams: apply a hub command, echo the change ---------------------------

    async def apply_crm(self, command: Any, minutes: float) -> crm.CrmTaskUpserted:
        c = command.payload
        if command.event_type == "crm.task.create":
            task_id = f"ct-{next(self._ids)}"
            task = crm.CrmTaskUpserted(id=task_id, record_type=c.record_type, record_id=c.record_id, subject=c.subject,
                                       description=c.description, due_date=c.due_date, priority=c.priority,
                                       status=c.status, owner_id=c.owner_id, created_by="u-int",
                                       modified_at=at(minutes), version=1, command_id=c.command_id)
        else:
            prev = self.crm[c.task_id]
            upd = {("subject" if ch.field == "title" else ch.field): ch.value for ch in c.changes}
            task = prev.model_copy(update={**upd, "version": prev.version + 1, "modified_at": at(minutes),
                                           "command_id": c.command_id, "add_to_pm": False, "pm_project_id": None})
        self.crm[task.id] = task
        await self.send(task, origin="crm", key=f"task:{task.id}")
        return task

    async def apply_pm(self, command: Any, minutes: float) -> pm.PmTaskUpserted:
        c = command.payload
        if command.event_type == "pm.task.create":
            task_id = f"pt-{next(self._ids)}"
            task = pm.PmTaskUpserted(portal_id=c.portal_id, project_id=c.project_id, id=task_id, title=c.title,
                                     description=c.description, due_date=c.due_date, priority=c.priority,
                                     status=c.status, owner_id=c.owner_id, parent_task_id=c.parent_task_id,
                                     recurring=False, add_to_crm=False, modified_at=at(minutes), version=1,
                                     command_id=c.command_id)
        else:
            prev = self.pm[c.task_id]
            upd = {ch.field: ch.value for ch in c.changes}
            task = prev.model_copy(update={**upd, "version": prev.version + 1, "modified_at": at(minutes),
                                           "command_id": c.command_id})
        self.pm[task.id] = task
        await self.send(task, origin="pm", key=f"task:{task.id}")
        return task


@pytest.fixture
def tasks_settings() -> dict[str, str]:
    """Extra HUB_* settings of the tasks service under test; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
async def world(hub_env: HubEnv, kafka_probe: KafkaProbe, tasks_settings: dict[str, str]) -> AsyncIterator[World]:
    async with service_harness(hub_env, kafka_probe, "tasks", cls=World, outputs=OUTPUTS, **tasks_settings) as harness:
        yield harness


@pytest.fixture
def service(world: World) -> Any:
    """The running tasks service object (its settings, retention rules, ASGI app)."""
    return world.service
