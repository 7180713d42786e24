"""Applying the hub's commands (crm.commands, pm.commands) the way the real tools would.

Each command runs inside its own savepoint: applied entirely (records written,
change events with `command_id` = the command's id emitted, origin = the side
that changed) or refused entirely (`crm.command.rejected` / `pm.command.rejected`
with a RejectionCode, nothing else written). A command id is applied at most
once whatever envelope it comes in (ledger `applied_commands`); the platform's
inbox already absorbs redelivery of the same event.

Orgs: the sandbox is multi-tenant by envelope `org_id` (each org has its own
CRM and PM tool). It answers commands only for the orgs it hosts (that have a
record): a command for any other org is ignored and counted (`command_ignored`),
as a separate connector would never see it; refusing it `not_found` made the hub
tell people their changes failed when another connector had applied them. In a
hosted org, a command about records the org does not have is refused
`not_found`, as the real tool would. Commands are never dead-lettered for a
domain reason.

Locks (for tests and demos of refusals): a record locked through the UI API
(`POST /sandbox/{side}/{kind}/{id}/lock`) refuses task updates and deletes from
the integration with `locked`; people can still change it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hub_platform.consumer import HandlerContext, Router
from hub_schema import Envelope, Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events.crm import CrmCommandRejected
from hub_schema.events.pm import PmCommandRejected
from hub_sandbox import domain, storage
from hub_sandbox.domain import Rejected
from hub_sandbox.settings import SandboxSettings
from hub_sandbox.world import InvalidRecord, NotFound, World

Apply = Callable[[World, Any], Awaitable[None]]


def _unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


# --- CRM ------------------------------------------------------------------------------------


async def crm_task_create(w: World, c: cmd.CrmTaskCreate) -> None:
    await w.need("crm", c.record_type, c.record_id)
    if c.parent_task_id:
        await w.need("crm", "task", c.parent_task_id)
    await w.save("crm", "task", {
        "record_type": c.record_type, "record_id": c.record_id, "subject": c.subject, "description": c.description,
        "due_date": c.due_date, "priority": c.priority, "status": c.status, "owner_id": c.owner_id,
        "parent_task_id": c.parent_task_id, "created_by": w.settings.sandbox_integration_user_id, "add_to_pm": False,
    }, extra={"hub_task_id": str(c.hub_task_id)})


async def crm_task_update(w: World, c: cmd.CrmTaskUpdate) -> None:
    task = await w.need("crm", "task", c.task_id)
    domain.check_not_locked("task", task.data, task.extra)
    domain.check_base_version("task", c.task_id, c.base_version, task.version, w.settings.sandbox_version_conflicts)
    await w.save("crm", "task", domain.task_changes(c.changes, title_field="subject"), record_id=c.task_id, must_exist=True)


async def crm_task_delete(w: World, c: cmd.CrmTaskDelete) -> None:
    task = await w.need("crm", "task", c.task_id)
    domain.check_not_locked("task", task.data, task.extra)
    await w.delete("crm", "task", c.task_id)


async def crm_note_add(w: World, c: cmd.CrmNoteAdd) -> None:
    await w.need("crm", c.record_type, c.record_id)
    await w.save("crm", "note", {
        "record_type": c.record_type, "record_id": c.record_id, "title": c.title, "body": c.body,
        "author_id": w.settings.sandbox_integration_user_id,
    }, extra={"hub_task_id": str(c.hub_task_id), "pm_comment_id": c.pm_comment_id, "author_name": c.author_name})


# --- PM: projects -----------------------------------------------------------------------------


async def _group_for(w: World, portal_id: str, group_id: str | None, new_group_name: str | None) -> str | None:
    if group_id is not None:
        await w.need("pm", "project_group", group_id, portal_id=portal_id)
        return group_id
    if new_group_name is not None:
        return (await w.save("pm", "project_group", {"portal_id": portal_id, "name": new_group_name})).id
    return None


async def pm_project_create(w: World, c: cmd.PmProjectCreate) -> None:
    """All or nothing (S19): every check runs before the first write; a late refusal rolls the savepoint back."""
    p = c.portal_id
    await w.need("pm", "portal", p)
    for g in c.users:
        await w.need("pm", "portal_user", g.user_id, portal_id=p)
    if c.owner_id:
        await w.need("pm", "portal_user", c.owner_id, portal_id=p)
    if c.group_id:
        await w.need("pm", "project_group", c.group_id, portal_id=p)
    companies = list(c.client_company_ids)
    for cid in c.client_company_ids:
        await w.need("pm", "client_company", cid, portal_id=p)
    client_users = list(c.client_user_ids)
    for uid in c.client_user_ids:
        companies.append((await w.need("pm", "client_user", uid, portal_id=p)).data["client_company_id"])
    for nu in c.new_client_users:
        if nu.client_company_id:
            await w.need("pm", "client_company", nu.client_company_id, portal_id=p)
    portal_users = [r.data for r in await w.find("pm", "client_user", portal_id=p)]
    domain.check_new_client_users([u.model_dump(mode="json") for u in c.new_client_users], portal_users)
    for nu in c.new_client_users:
        same_contact = [r.data for r in await w.find("pm", "client_user", extra={"crm_record_type": "contact", "crm_record_id": nu.crm_contact_id})]
        domain.check_one_company(nu.crm_contact_id, nu.client_company_id or "(new client company)", same_contact)

    group_id = await _group_for(w, p, c.group_id, c.new_group_name)
    new_company_id = None
    if c.new_client_company is not None:
        new_company_id = (await w.save("pm", "client_company", {"portal_id": p, "name": c.new_client_company.name},
                                       extra={"crm_account_id": c.new_client_company.crm_account_id})).id
        companies.append(new_company_id)
    for nu in c.new_client_users:
        company_id = nu.client_company_id or new_company_id
        rec = await w.save("pm", "client_user", {"portal_id": p, "email": nu.email, "name": nu.name, "client_company_id": company_id},
                           extra={"crm_record_type": "contact", "crm_record_id": nu.crm_contact_id})
        client_users.append(rec.id)
        companies.append(company_id)  # type: ignore[arg-type]
    owner = c.owner_id or (c.users[0].user_id if c.users else w.settings.sandbox_integration_user_id)
    user_ids = [g.user_id for g in c.users] + ([c.owner_id] if c.owner_id else [])
    await w.save("pm", "project", {
        "portal_id": p, "name": c.name, "description": c.description, "owner_id": owner, "group_id": group_id,
        "start_date": c.start_date, "end_date": c.end_date, "custom_fields": c.custom_fields,
        "user_ids": _unique(user_ids), "client_company_ids": _unique(companies), "client_user_ids": _unique(client_users),
    }, extra={"grants": {g.user_id: {"role": g.role, "permissions": g.permissions} for g in c.users},
              "linked_records": [r.model_dump(mode="json") for r in c.linked_records]})


async def pm_project_update(w: World, c: cmd.PmProjectUpdate) -> None:
    project = await w.need("pm", "project", c.project_id, portal_id=c.portal_id)
    if c.owner_id:
        await w.need("pm", "portal_user", c.owner_id, portal_id=c.portal_id)
    changes: dict[str, Any] = {}
    group_id = await _group_for(w, c.portal_id, c.group_id, c.new_group_name)
    if group_id is not None:
        changes["group_id"] = group_id
    if c.name is not None:
        changes["name"] = c.name
    if c.owner_id is not None:
        changes["owner_id"] = c.owner_id
        changes["user_ids"] = _unique([*project.data["user_ids"], c.owner_id])
    if c.custom_fields is not None:
        changes["custom_fields"] = {**project.data["custom_fields"], **c.custom_fields}
    await w.save("pm", "project", changes, record_id=c.project_id, must_exist=True)


async def pm_project_group_create(w: World, c: cmd.PmProjectGroupCreate) -> None:
    await w.need("pm", "portal", c.portal_id)
    await w.save("pm", "project_group", {"portal_id": c.portal_id, "name": c.name})


async def pm_project_add_users(w: World, c: cmd.PmProjectAddUsers) -> None:
    project = await w.need("pm", "project", c.project_id, portal_id=c.portal_id)
    for g in c.users:
        await w.need("pm", "portal_user", g.user_id, portal_id=c.portal_id)
    grants = {**project.extra.get("grants", {}), **{g.user_id: {"role": g.role, "permissions": g.permissions} for g in c.users}}
    await w.save("pm", "project", {"user_ids": _unique([*project.data["user_ids"], *(g.user_id for g in c.users)])},
                 record_id=c.project_id, must_exist=True, extra={"grants": grants})


async def pm_project_add_client_users(w: World, c: cmd.PmProjectAddClientUsers) -> None:
    project = await w.need("pm", "project", c.project_id, portal_id=c.portal_id)
    companies = [(await w.need("pm", "client_user", uid, portal_id=c.portal_id)).data["client_company_id"] for uid in c.client_user_ids]
    await w.save("pm", "project", {
        "client_user_ids": _unique([*project.data["client_user_ids"], *c.client_user_ids]),
        "client_company_ids": _unique([*project.data["client_company_ids"], *companies]),
    }, record_id=c.project_id, must_exist=True)


# --- PM: client companies, client users, portal users ------------------------------------------


async def pm_client_company_create(w: World, c: cmd.PmClientCompanyCreate) -> None:
    await w.need("pm", "portal", c.portal_id)
    await w.save("pm", "client_company", {"portal_id": c.portal_id, "name": c.name}, extra={"crm_account_id": c.crm_account_id})


async def pm_client_company_update(w: World, c: cmd.PmClientCompanyUpdate) -> None:
    await w.need("pm", "client_company", c.client_company_id, portal_id=c.portal_id)
    await w.save("pm", "client_company", {"name": c.name}, record_id=c.client_company_id, must_exist=True)


async def pm_client_user_create(w: World, c: cmd.PmClientUserCreate) -> None:
    await w.need("pm", "portal", c.portal_id)
    await w.need("pm", "client_company", c.client_company_id, portal_id=c.portal_id)
    await w.save("pm", "client_user", {"portal_id": c.portal_id, "email": c.email, "name": c.name, "client_company_id": c.client_company_id},
                 extra={"crm_record_type": c.crm_record_type, "crm_record_id": c.crm_record_id})


async def pm_client_user_update(w: World, c: cmd.PmClientUserUpdate) -> None:
    await w.need("pm", "client_user", c.client_user_id, portal_id=c.portal_id)
    if c.client_company_id is not None:
        await w.need("pm", "client_company", c.client_company_id, portal_id=c.portal_id)
    changes = {k: v for k, v in {"email": c.email, "name": c.name, "client_company_id": c.client_company_id}.items() if v is not None}
    await w.save("pm", "client_user", changes, record_id=c.client_user_id, must_exist=True)


async def pm_portal_user_invite(w: World, c: cmd.PmPortalUserInvite) -> None:
    """An inactive user with the e-mail is reactivated; an active one means the invitation is refused."""
    await w.need("pm", "portal", c.portal_id)
    same = [r for r in await w.find("pm", "portal_user", portal_id=c.portal_id) if domain.norm_email(r.data["email"]) == domain.norm_email(c.email)]
    if any(r.data["active"] for r in same):
        raise Rejected("duplicate_email", f"{c.email!r} is already portal user {same[0].id!r}",
                       {"email": c.email, "existing_portal_user_id": same[0].id})
    await w.save("pm", "portal_user", {"portal_id": c.portal_id, "email": c.email, "name": c.name, "role": c.role, "active": True},
                 record_id=same[0].id if same else None, extra={"crm_user_id": c.crm_user_id, "permissions": c.permissions})


async def pm_portal_user_deactivate(w: World, c: cmd.PmPortalUserDeactivate) -> None:
    await w.need("pm", "portal_user", c.user_id, portal_id=c.portal_id)
    await w.save("pm", "portal_user", {"active": False}, record_id=c.user_id, must_exist=True)


# --- PM: tasks ----------------------------------------------------------------------------------


async def pm_task_create(w: World, c: cmd.PmTaskCreate) -> None:
    await w.need("pm", "project", c.project_id, portal_id=c.portal_id)
    if c.parent_task_id:
        await w.need("pm", "task", c.parent_task_id, project_id=c.project_id)
    await w.save("pm", "task", {
        "portal_id": c.portal_id, "project_id": c.project_id, "title": c.title, "description": c.description,
        "due_date": c.due_date, "priority": c.priority, "status": c.status, "owner_id": c.owner_id,
        "parent_task_id": c.parent_task_id, "recurring": False, "add_to_crm": True,
    }, extra={"hub_task_id": str(c.hub_task_id)})


async def pm_task_update(w: World, c: cmd.PmTaskUpdate) -> None:
    task = await w.need("pm", "task", c.task_id, portal_id=c.portal_id, project_id=c.project_id)
    domain.check_not_locked("task", task.data, task.extra)
    domain.check_base_version("task", c.task_id, c.base_version, task.version, w.settings.sandbox_version_conflicts)
    update = domain.task_changes(c.changes)
    parent_id = task.data.get("parent_task_id")
    parent = await w.get("pm", "task", parent_id) if parent_id else None
    project = await w.get("pm", "project", c.project_id)
    domain.check_pm_task_update(task.data, update, parent=parent.data if parent else None, project=project.data if project else None)
    await w.save("pm", "task", update, record_id=c.task_id, must_exist=True)


async def pm_task_delete(w: World, c: cmd.PmTaskDelete) -> None:
    task = await w.need("pm", "task", c.task_id, portal_id=c.portal_id, project_id=c.project_id)
    domain.check_not_locked("task", task.data, task.extra)
    await w.delete("pm", "task", c.task_id)


COMMANDS: dict[type[cmd.Command], tuple[str, Apply]] = {
    cmd.CrmTaskCreate: ("crm", crm_task_create),
    cmd.CrmTaskUpdate: ("crm", crm_task_update),
    cmd.CrmTaskDelete: ("crm", crm_task_delete),
    cmd.CrmNoteAdd: ("crm", crm_note_add),
    cmd.PmProjectCreate: ("pm", pm_project_create),
    cmd.PmProjectUpdate: ("pm", pm_project_update),
    cmd.PmProjectGroupCreate: ("pm", pm_project_group_create),
    cmd.PmProjectAddUsers: ("pm", pm_project_add_users),
    cmd.PmProjectAddClientUsers: ("pm", pm_project_add_client_users),
    cmd.PmClientCompanyCreate: ("pm", pm_client_company_create),
    cmd.PmClientCompanyUpdate: ("pm", pm_client_company_update),
    cmd.PmClientUserCreate: ("pm", pm_client_user_create),
    cmd.PmClientUserUpdate: ("pm", pm_client_user_update),
    cmd.PmPortalUserInvite: ("pm", pm_portal_user_invite),
    cmd.PmPortalUserDeactivate: ("pm", pm_portal_user_deactivate),
    cmd.PmTaskCreate: ("pm", pm_task_create),
    cmd.PmTaskUpdate: ("pm", pm_task_update),
    cmd.PmTaskDelete: ("pm", pm_task_delete),
}
"""Every command the sandbox carries out: payload class -> (side, how it is applied)."""

APPLY: dict[str, tuple[str, Apply]] = {model.event_type_and_version()[0]: how for model, how in COMMANDS.items()}


def make_router(settings: SandboxSettings) -> Router:
    router = Router()

    async def handle(ctx: HandlerContext, event: Event[Any]) -> None:
        side, apply = APPLY[event.event_type]
        c: cmd.Command = event.payload
        env = event.envelope
        conn = ctx.conn
        await storage.lock_org(conn, env.org_id)
        if not await storage.hosts_org(conn, env.org_id):
            ctx.log.info("command for an org the sandbox does not host: ignored", org_id=env.org_id, command_type=env.event_type)
            await storage.log_message(conn, org_id=env.org_id, what="command_ignored", side=side, event_type=env.event_type,
                                      event_id=env.event_id, command_id=c.command_id, entity_key=env.entity_key)
            return
        if await storage.command_seen(conn, c.command_id):
            await storage.log_message(conn, org_id=env.org_id, what="command_duplicate", side=side, event_type=env.event_type,
                                      event_id=env.event_id, command_id=c.command_id, entity_key=env.entity_key)
            return

        async def publish(payload: Payload, entity_key: str, origin: str) -> Envelope:
            return await ctx.emit(payload, entity_key=entity_key, origin=origin)  # type: ignore[arg-type]

        world = World(conn, env.org_id, settings, publish, command_id=c.command_id, acting_user_id=settings.sandbox_integration_user_id)
        rejected: Rejected | None = None
        try:
            async with conn.transaction():
                await apply(world, c)
        except Rejected as exc:
            rejected = exc
        except NotFound as exc:
            rejected = Rejected("not_found", str(exc))
        except InvalidRecord as exc:
            rejected = Rejected("invalid", str(exc))
        if rejected is not None:
            model = CrmCommandRejected if side == "crm" else PmCommandRejected
            ctx.log.info("command rejected", command_type=env.event_type, reason_code=rejected.code)
            await world.emit(model(command_id=c.command_id, command_type=env.event_type, reason_code=rejected.code,
                                   reason=rejected.reason[:2000], details=rejected.details),
                             entity_key=env.entity_key, origin=side)
        outcome = "rejected" if rejected else "applied"
        await storage.record_command(conn, command_id=c.command_id, command_type=env.event_type, org_id=env.org_id, side=side,
                                     outcome=outcome, reason_code=rejected.code if rejected else None, event_id=env.event_id)
        await storage.log_message(conn, org_id=env.org_id, what=f"command_{outcome}", side=side, event_type=env.event_type,
                                  event_id=env.event_id, command_id=c.command_id, entity_key=env.entity_key,
                                  reason_code=rejected.code if rejected else None)

    router.on(*COMMANDS)(handle)
    return router
