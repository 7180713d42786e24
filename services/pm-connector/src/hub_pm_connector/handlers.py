"""pm.commands -> Zoho Projects, and the outcome back on pm.ingest the way the sandbox reports it.

Every command the hub emits on pm.commands is carried out (projects with their group, client company and
client users; project members; client companies and users; portal users; tasks). Applied: every record it
created or changed, as Projects now has it, published with the command's `command_id` (the echo the hub
recognises). Refused by Projects: `pm.command.rejected` with the command id and the reason.

Zoho has no transactions, and a project is created in several calls (group, client company, client users,
the project). So each write is a *step* with an id derived from the command id, and `step id -> created id`
is committed the moment Projects accepted the call, before the next call, the handler's transaction and
the Kafka offset. A redelivered command, or one whose process died half-way, runs again and skips every step
already done: it creates nothing twice and publishes the same echo. Checks that can refuse a command
(records it names exist, e-mails are free) run before the first write; a refusal by Projects after some
steps went through leaves those records in Projects (the poll publishes them without a command id).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hub_platform.consumer import HandlerContext, Router
from hub_pm_connector import domain, storage
from hub_pm_connector.ingress import Connector
from hub_schema import Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events.pm import PmCommandRejected
from hub_schema.registry import all_events
from hub_schema.topics import PM_COMMANDS
from hub_zoho import state
from hub_zoho.api import ZohoError
from hub_zoho.projects import ProjectsClient


class Refused(Exception):
    def __init__(self, code: str, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.details = code, reason, details or {}


@dataclass
class Run:
    """One command being carried out: its steps (each done at most once) and the records it touched."""

    connector: Connector
    org_id: str
    command_type: str
    command: Any
    client: ProjectsClient
    replay: bool  # the command was carried out before: only the echo is published again
    touched: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (kind, id, deleted fields)

    @property
    def portal(self) -> str:
        return str(self.command.portal_id)

    def step_id(self, name: str) -> uuid.UUID:
        return uuid.uuid5(self.command.command_id, name)

    async def done(self, name: str) -> str | None:
        row = await storage.applied_command(self.connector.pool, self.step_id(name))
        return row["record_id"] if row is not None else None

    async def step(self, name: str, kind: str, call: Callable[[], Awaitable[dict[str, Any] | None]],
                   record_id: str | None = None) -> str:
        """Carry out one write unless a run before did; remember its record id; note the record for the echo."""
        done = await self.done(name)
        if done is None:
            rec = await call()
            done = str(rec["id"]) if rec is not None else str(record_id)
            await storage.record_command(self.connector.pool, command_id=self.step_id(name), org_id=self.org_id,
                                         command_type=f"{self.command_type}#{name}", module=kind, record_id=done,
                                         outcome="applied", parent_command_id=self.command.command_id)
        self.touch(kind, done)
        return done

    def touch(self, kind: str, record_id: str, deleted: dict[str, Any] | None = None) -> None:
        if all((k, i) != (kind, record_id) for k, i, _ in self.touched):
            self.touched.append((kind, record_id, deleted or {}))

    async def need(self, kind: str, record_id: str, what: str, *, client_user: bool | None = None) -> dict[str, Any]:
        """The record must exist in the portal (checked before the first write; skipped on a replay)."""
        if self.replay:
            return {}
        rec = await self.client.get(self.portal, kind, record_id)
        if rec is not None and client_user is not None and (rec.get("user_type") == "client") != client_user:
            rec = None
        if rec is None:
            raise Refused("not_found", f"{what} {record_id} does not exist in Zoho Projects portal {self.portal}",
                          {"kind": kind, "id": record_id})
        return rec

    async def email_free(self, email: str, step: str) -> None:
        """S19: client-user e-mails are unique per portal; one this command created itself does not count."""
        if self.replay or await self.done(step) is not None:
            return
        async for page in self.client.portal_list(self.portal, "users"):
            for u in page:
                if str(u.get("email", "")).lower() == email.lower() and u.get("status", "active") == "active":
                    raise Refused("duplicate_email", f"{email!r} is already user {u['id']} of portal {self.portal}",
                                  {"email": email, "existing_user_id": str(u["id"])})


# --- one function per command type ----------------------------------------------------------------


async def _group(r: Run, group_id: str | None, new_group_name: str | None) -> str | None:
    if group_id is not None:
        await r.need("projectgroups", group_id, "project group")
        return group_id
    if new_group_name is not None:
        return await r.step("group", "projectgroups", lambda: r.client.create(r.portal, "projectgroups", {"name": new_group_name}))
    return None


async def project_create(r: Run, c: cmd.PmProjectCreate) -> None:
    for uid in dict.fromkeys([g.user_id for g in c.users] + ([c.owner_id] if c.owner_id else [])):
        await r.need("users", uid, "portal user", client_user=False)
    if c.group_id:
        await r.need("projectgroups", c.group_id, "project group")
    companies = list(c.client_company_ids)
    for cid in c.client_company_ids:
        await r.need("clients", cid, "client company")
    client_users = list(c.client_user_ids)
    for uid in c.client_user_ids:
        user = await r.need("users", uid, "client user", client_user=True)
        if user:
            companies.append(str(user["client_company"]["id"]))
    for nu in c.new_client_users:
        if nu.client_company_id:
            await r.need("clients", nu.client_company_id, "client company")
        await r.email_free(nu.email, f"client_user/{nu.email.lower()}")

    group_id = await _group(r, c.group_id, c.new_group_name)
    new_company = None
    if c.new_client_company is not None:
        name = c.new_client_company.name
        new_company = await r.step("client_company", "clients", lambda: r.client.create(r.portal, "clients", {"name": name}))
        companies.append(new_company)
    for nu in c.new_client_users:
        company = nu.client_company_id or new_company
        assert company is not None  # the command's validator guarantees it
        fields = domain.client_user_fields(nu.email, nu.name, company)
        client_users.append(await r.step(f"client_user/{nu.email.lower()}", "users",
                                         lambda fields=fields: r.client.create(r.portal, "users", fields)))  # type: ignore[misc]
        companies.append(company)
    fields = domain.project_create_fields(c, group_id=group_id, client_company_ids=companies, client_user_ids=client_users)
    await r.step("project", "projects", lambda: r.client.create(r.portal, "projects", fields))


async def project_update(r: Run, c: cmd.PmProjectUpdate) -> None:
    project = await r.need("projects", c.project_id, "project")
    if c.owner_id:
        await r.need("users", c.owner_id, "portal user", client_user=False)
    group_id = await _group(r, c.group_id, c.new_group_name)
    fields = domain.project_update_fields(c, project, group_id)
    await r.step("project", "projects", lambda: r.client.update(r.portal, "projects", c.project_id, fields))


async def project_group_create(r: Run, c: cmd.PmProjectGroupCreate) -> None:
    await r.step("group", "projectgroups", lambda: r.client.create(r.portal, "projectgroups", {"name": c.name}))


async def _add_members(r: Run, project_id: str, members: str, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    results = await r.client.add_project_members(r.portal, project_id, members, items)
    failed = [x for x in results if not x.ok]
    if failed:
        raise Refused("not_found", f"Zoho Projects did not add {len(failed)} of {len(results)} {members} to project {project_id}",
                      {"failed_ids": ",".join(str(x.details.get("id")) for x in failed)[:500]})
    return {"id": project_id}


async def project_add_users(r: Run, c: cmd.PmProjectAddUsers) -> None:
    await r.need("projects", c.project_id, "project")
    for g in c.users:
        await r.need("users", g.user_id, "portal user", client_user=False)
    items = [domain.grant(g) for g in c.users]
    await r.step("members", "projects", lambda: _add_members(r, c.project_id, "users", items))


async def project_add_client_users(r: Run, c: cmd.PmProjectAddClientUsers) -> None:
    await r.need("projects", c.project_id, "project")
    for uid in c.client_user_ids:
        await r.need("users", uid, "client user", client_user=True)
    items = [{"id": uid} for uid in c.client_user_ids]
    await r.step("members", "projects", lambda: _add_members(r, c.project_id, "clients", items))


async def client_company_create(r: Run, c: cmd.PmClientCompanyCreate) -> None:
    await r.step("client_company", "clients", lambda: r.client.create(r.portal, "clients", {"name": c.name}))


async def client_company_update(r: Run, c: cmd.PmClientCompanyUpdate) -> None:
    await r.need("clients", c.client_company_id, "client company")
    await r.step("client_company", "clients", lambda: r.client.update(r.portal, "clients", c.client_company_id, {"name": c.name}))


async def client_user_create(r: Run, c: cmd.PmClientUserCreate) -> None:
    await r.need("clients", c.client_company_id, "client company")
    await r.email_free(c.email, "client_user")
    fields = domain.client_user_fields(c.email, c.name, c.client_company_id)
    await r.step("client_user", "users", lambda: r.client.create(r.portal, "users", fields))


async def client_user_update(r: Run, c: cmd.PmClientUserUpdate) -> None:
    await r.need("users", c.client_user_id, "client user", client_user=True)
    if c.client_company_id is not None:
        await r.need("clients", c.client_company_id, "client company")
    fields = domain.client_user_update_fields(c)
    await r.step("client_user", "users", lambda: r.client.update(r.portal, "users", c.client_user_id, fields))


async def portal_user_invite(r: Run, c: cmd.PmPortalUserInvite) -> None:
    """Projects reactivates an inactive user with the e-mail; an active one refuses (409: duplicate_email)."""
    fields = domain.portal_user_fields(c)
    await r.step("portal_user", "users", lambda: r.client.create(r.portal, "users", fields))


async def portal_user_deactivate(r: Run, c: cmd.PmPortalUserDeactivate) -> None:
    await r.need("users", c.user_id, "portal user", client_user=False)
    await r.step("portal_user", "users", lambda: r.client.update(r.portal, "users", c.user_id, {"status": "inactive"}))


async def task_create(r: Run, c: cmd.PmTaskCreate) -> None:
    fields = domain.task_create_fields(c)
    await r.step("task", "tasks", lambda: r.client.create_task(r.portal, c.project_id, fields))


async def task_update(r: Run, c: cmd.PmTaskUpdate) -> None:
    fields = domain.task_update_fields(c)
    await r.step("task", "tasks", lambda: r.client.update_task(r.portal, c.project_id, c.task_id, fields))


async def task_delete(r: Run, c: cmd.PmTaskDelete) -> None:
    async def delete() -> None:
        await r.client.delete_task(r.portal, c.project_id, c.task_id)

    await r.step("task", "tasks", delete, record_id=c.task_id)
    r.touched[-1] = ("tasks", c.task_id, {"deleted": True})


APPLY: dict[str, Callable[[Run, Any], Awaitable[None]]] = {
    "pm.project.create": project_create,
    "pm.project.update": project_update,
    "pm.project_group.create": project_group_create,
    "pm.project.add_users": project_add_users,
    "pm.project.add_client_users": project_add_client_users,
    "pm.client_company.create": client_company_create,
    "pm.client_company.update": client_company_update,
    "pm.client_user.create": client_user_create,
    "pm.client_user.update": client_user_update,
    "pm.portal_user.invite": portal_user_invite,
    "pm.portal_user.deactivate": portal_user_deactivate,
    "pm.task.create": task_create,
    "pm.task.update": task_update,
    "pm.task.delete": task_delete,
}


def make_router(connector: Connector) -> Router:
    router = Router()

    async def handle(ctx: HandlerContext, event: Event[Any]) -> None:
        c: Any = event.payload
        env = event.envelope
        org_id, command_type = env.org_id, env.event_type

        async def emit(payload: Payload, entity_key: str, event_id: uuid.UUID) -> None:
            await ctx.emit(payload, entity_key=entity_key, origin="pm", event_id=event_id)

        async def reject(code: str, reason: str, details: dict[str, Any]) -> None:
            ctx.log.info("command refused", command_type=command_type, reason_code=code, reason=reason)
            await emit(PmCommandRejected(command_id=c.command_id, command_type=command_type, reason_code=code,  # type: ignore[arg-type]
                                         reason=reason[:2000], details=details),
                       env.entity_key, state.rejection_event_id(c.command_id))

        if org_id not in connector.projects:
            await reject("other", f"the PM connector has no Zoho credentials for org {org_id}", {})
            return
        done = await storage.applied_command(connector.pool, c.command_id)
        if done is not None and done["outcome"] == "rejected":
            await reject(done["reason_code"], done["reason"], {})
            return
        run = Run(connector, org_id, command_type, c, connector.projects[org_id], replay=done is not None)
        try:
            await APPLY[command_type](run, c)
        except (Refused, ZohoError) as exc:
            if isinstance(exc, ZohoError):
                exc = Refused(domain.rejection_code(exc.status, users="user" in command_type), f"Zoho Projects refused it: {exc}",
                              {"zoho_status": exc.status})
            await storage.record_command(connector.pool, command_id=c.command_id, org_id=org_id, command_type=command_type,
                                         module=command_type.split(".")[1], record_id=None, outcome="rejected",
                                         reason_code=exc.code, reason=exc.reason[:2000])
            await reject(exc.code, exc.reason, exc.details)
            return
        if done is None:
            kind, record_id, _ = run.touched[-1]
            await storage.record_command(connector.pool, command_id=c.command_id, org_id=org_id, command_type=command_type,
                                         module=kind, record_id=record_id, outcome="applied")
        for kind, record_id, how in run.touched:  # the echo: each record as Projects has it now, with the command id
            project_id = getattr(c, "project_id", None) if kind == "tasks" else None
            if how.get("deleted"):
                rec = None
            elif kind == "tasks":
                rec = await run.client.get_task(run.portal, str(project_id), record_id)
            else:
                rec = await run.client.get(run.portal, kind, record_id)
            await connector.observe(ctx.conn, org_id, run.portal, kind, record_id, rec, emit, command_id=c.command_id,
                                    deleted_fields={"project_id": project_id} if rec is None else None)

    types = sorted({m.EVENT_TYPE for m in all_events().values() if m.TOPIC == PM_COMMANDS})
    assert set(types) == set(APPLY), f"pm.commands without a handler: {sorted(set(types) - set(APPLY))}"
    router.on(*types)(handle)
    return router
