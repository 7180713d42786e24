"""Project ↔ record links asked for from the CRM (S4, S9, S16, S19): list, associate, dissociate, create.

- S9: the group is created by the same PM command that creates or edits the project
  (pm.project.create / pm.project.update with new_group_name), so nothing is half-done.
- S19: client-user e-mails are unique per portal; a request that would break that is refused as a whole.
"""

from __future__ import annotations

import uuid
from typing import Any

from hub_linking import domain, rows, storage
from hub_linking.handlers.common import (
    Refused, actor_who, count_project_requested, emit_command, emit_links, enabled_integration, notify, refuse,
    requests_handler, state_of,
)
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import requests
from hub_schema.events.common import RecordRef
from hub_schema.events.linking import (
    AssociableProjectItem, AssociableProjectsListed, ProjectAssociated, ProjectCreationRequested,
)

router = Router()


async def _linker(ctx: HandlerContext, event: Event[Any]) -> domain.Actor:
    return await actor_who(ctx, event, domain.may_link_at_all)


async def _record(ctx: HandlerContext, org: str, record_type: str, record_id: str) -> rows.CrmRecord:
    record = await storage.get_record(ctx.conn, org, record_type, record_id)
    if record is None:
        raise Refused("not_found", f"the hub does not know {record_type} {record_id}",
                      {"record_type": record_type, "record_id": record_id})
    return record


async def _offered_contacts(ctx: HandlerContext, org: str, record: rows.CrmRecord) -> list[rows.CrmRecord]:
    """S4: a contact record offers itself; an account its contacts; a deal its contacts and its account's."""
    if record.record_type == "contact":
        return [record]
    if record.record_type == "lead":
        return []
    out: dict[str, rows.CrmRecord] = {}
    if record.record_type == "deal":
        out.update(await storage.get_records(ctx.conn, org, "contact", list(record.data.get("contact_ids", []))))
    if record.own_account_id:
        out.update({c.record_id: c for c in await storage.contacts_of_account(ctx.conn, org, record.own_account_id)})
    return [out[k] for k in sorted(out)]


async def _chosen_contacts(ctx: HandlerContext, org: str, record: rows.CrmRecord, chosen: list[str],
                           default_all: bool) -> list[rows.CrmRecord]:
    offered = {c.record_id: c for c in await _offered_contacts(ctx, org, record)}
    if record.record_type == "contact":
        return [record]
    if not chosen:
        return list(offered.values()) if default_all else []
    missing = [c for c in chosen if c not in offered]
    if missing:
        raise Refused("contact_not_offered", f"contacts {', '.join(missing)} are not contacts of "
                                             f"{record.record_type} {record.record_id}", {"contact_ids": missing})
    return [offered[c] for c in chosen]


def _check_duplicates(contacts: list[rows.CrmRecord]) -> None:
    """S19: client-user e-mails are unique per portal; refuse the whole request, tell the user."""
    dups = domain.duplicate_emails((c.record_id, c.email) for c in contacts)
    if not dups:
        return
    names = {c.record_id: c.name for c in contacts}
    parts = [f"{email}: " + ", ".join(f"{names[i]} ({i})" for i in ids) for email, ids in dups.items()]
    # `email` and `contacts` are what the duplicate_client_emails e-mail needs (notifications.py contract).
    details = {"duplicates": [{"email": e, "contact_ids": ids} for e, ids in dups.items()],
               "email": ", ".join(dups),
               "contacts": [{"id": i, "name": names[i]} for ids in dups.values() for i in ids]}
    raise Refused("duplicate_email", "these contacts share an e-mail address (client-user e-mails are unique per "
                                     "portal): " + "; ".join(parts), details)


async def _grants(ctx: HandlerContext, org: str, grants: list[requests.CrmUserGrant]) -> list[cmd.ProjectUserGrant]:
    """CRM users added with the role and permissions shown for them (possibly changed) (S4)."""
    users = await storage.get_users(ctx.conn, org, [g.user_id for g in grants])
    ok = {i for i, u in users.items() if u.portal_user_id and u.active}
    missing = [g.user_id for g in grants if g.user_id not in ok]
    if missing:
        raise Refused("crm_user_not_in_portal", f"CRM users {', '.join(missing)} have no portal user yet; import them "
                                                "first", {"user_ids": missing})
    return [cmd.ProjectUserGrant(user_id=users[g.user_id].portal_user_id, role=g.role,  # type: ignore[arg-type]
                                 permissions=list(g.permissions)) for g in grants]


async def _owner(ctx: HandlerContext, org: str, owner_id: str | None) -> str | None:
    """The owner is chosen among CRM users; the PM tool needs their portal user."""
    if owner_id is None:
        return None
    user = await storage.get_actor(ctx.conn, org, owner_id)
    return user.portal_user_id if user is not None and user.portal_user_id else owner_id


async def _group(ctx: HandlerContext, org: str, portal: str, group_id: str | None) -> None:
    if group_id is not None and not await storage.group_exists(ctx.conn, org, portal, group_id):
        raise Refused("not_found", f"project group {group_id} does not exist in the portal", {"group_id": group_id})


@requests_handler(router, requests.ProjectsListAssociable)
async def on_list_associable(ctx: HandlerContext, event: Event[requests.ProjectsListAssociable]) -> None:
    p = event.payload
    org = event.org_id
    integ = await enabled_integration(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ.portal_id
    linked = await storage.linked_project_ids(ctx.conn, org, portal, p.record_type, p.record_id)
    offered = [AssociableProjectItem(project_id=r.project_id, name=r.name, status=r.status,  # type: ignore[arg-type]
                                     progress_percent=r.progress_percent)
               for r in await storage.projects_of_portal(ctx.conn, org, portal)
               if r.project_id not in linked and domain.may_link_project(actor, r)]
    await ctx.emit(AssociableProjectsListed(request_id=p.request_id, acting_user_id=p.acting_user_id,
                                            record=RecordRef(record_type=p.record_type, record_id=p.record_id),
                                            portal_id=portal, projects=offered[:1000]),
                   entity_key=f"{org}:request:{p.request_id}", origin="hub")


async def _linkable_project(ctx: HandlerContext, org: str, portal: str, actor: domain.Actor,
                            project_id: str) -> rows.Project:
    project = await storage.get_project(ctx.conn, org, portal, project_id)
    if project is None:
        raise Refused("not_found", f"project {project_id} is not in portal {portal}", {"project_id": project_id})
    if not domain.may_link_project(actor, project):
        raise Refused("permission_denied", f"you may not edit or associate project {project.name}",
                      {"project_id": project_id})
    return project


@requests_handler(router, requests.ProjectAssociate)
async def on_associate(ctx: HandlerContext, event: Event[requests.ProjectAssociate]) -> None:
    p = event.payload
    org = event.org_id
    integ = await enabled_integration(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ.portal_id
    project = await _linkable_project(ctx, org, portal, actor, p.project_id)
    record = await _record(ctx, org, p.record_type, p.record_id)
    if await storage.is_linked(ctx.conn, org, portal, p.project_id, p.record_type, p.record_id):
        raise Refused("already_linked", f"project {project.name} is already associated with this {p.record_type}")
    await _group(ctx, org, portal, p.group_id)
    grants = await _grants(ctx, org, list(p.crm_users))
    contacts = await _chosen_contacts(ctx, org, record, list(p.client_contact_ids), default_all=False)
    _check_duplicates(contacts)
    account_id = record.own_account_id
    target_company = await storage.get_pair(ctx.conn, org, portal, "account", account_id) if account_id else None
    paired = await storage.get_pairs(ctx.conn, org, portal, "contact", [c.record_id for c in contacts])
    client_users = await storage.get_client_users(ctx.conn, org, portal, list(paired.values()))
    existing: list[str] = []
    to_create: list[rows.CrmRecord] = []
    for c in contacts:
        cu_id = paired.get(c.record_id)
        if cu_id is not None:
            cu = client_users.get(cu_id)
            if cu is not None and target_company is not None and cu.company_id != target_company:
                raise Refused("contact_in_other_company",
                              f"contact {c.name} is already a client user of another client company "
                              f"({cu.company_id}); a contact can belong to one client company only",
                              {"contact_id": c.record_id, "client_company_id": cu.company_id})
            existing.append(cu_id)
        else:
            if target_company is None:
                raise Refused("no_client_company", f"contact {c.name} has no client user and its account has no "
                                                   "client company in the portal yet", {"contact_id": c.record_id})
            if not c.email:
                raise Refused("invalid", f"contact {c.name} has no e-mail address", {"contact_id": c.record_id})
            to_create.append(c)
    command_ids: list[uuid.UUID] = []
    key = f"project:{p.project_id}"
    owner = await _owner(ctx, org, p.owner_id)
    if owner is not None or p.group_id is not None or p.new_group_name is not None:
        command_ids.append(uuid.uuid4())
        await emit_command(ctx, cmd.PmProjectUpdate(command_id=command_ids[-1], portal_id=portal, project_id=p.project_id,
                                                    owner_id=owner, group_id=p.group_id,
                                                    new_group_name=p.new_group_name), key, org)
    if grants:
        command_ids.append(uuid.uuid4())
        await emit_command(ctx, cmd.PmProjectAddUsers(command_id=command_ids[-1], portal_id=portal,
                                                      project_id=p.project_id, users=grants), key, org)
    if existing:
        command_ids.append(uuid.uuid4())
        await emit_command(ctx, cmd.PmProjectAddClientUsers(command_id=command_ids[-1], portal_id=portal,
                                                            project_id=p.project_id,
                                                            client_user_ids=sorted(set(existing))), key, org)
    pending = [rows.PendingCommand(uuid.uuid4(), org, "client_user_for_project", portal,
                                   {"project_id": p.project_id, "contact_id": c.record_id}) for c in to_create]
    for c, new_user in zip(to_create, pending, strict=True):  # one command per new client user (emitted only)
        command_ids.append(new_user.command_id)
        assert target_company is not None
        await emit_command(ctx, cmd.PmClientUserCreate(command_id=new_user.command_id, portal_id=portal,
                                                       client_company_id=target_company, email=c.email,  # type: ignore[arg-type]
                                                       name=c.name, crm_record_type="contact",
                                                       crm_record_id=c.record_id), f"client_user:{new_user.command_id}", org)
    await storage.add_pending(ctx.conn, pending)
    await emit_links(ctx, org, portal, [(p.project_id, p.record_type, p.record_id)], linked=True, source="associate")
    await ctx.emit(ProjectAssociated(request_id=p.request_id, acting_user_id=p.acting_user_id, portal_id=portal,
                                     project_id=p.project_id,
                                     record=RecordRef(record_type=p.record_type, record_id=p.record_id),
                                     project_user_ids=list(project.user_ids),
                                     crm_user_ids=[g.user_id for g in p.crm_users],
                                     client_contact_ids=[c.record_id for c in contacts], command_ids=command_ids),
                   entity_key=f"{org}:project:{p.project_id}", origin="hub")


@requests_handler(router, requests.ProjectDissociate)
async def on_dissociate(ctx: HandlerContext, event: Event[requests.ProjectDissociate]) -> None:
    p = event.payload
    org = event.org_id
    integ = await enabled_integration(ctx, org)
    actor = await _linker(ctx, event)
    portal = integ.portal_id
    project = await storage.get_project(ctx.conn, org, portal, p.project_id)
    if project is not None and not domain.may_link_project(actor, project):
        raise Refused("permission_denied", f"you may not edit or associate project {project.name}")
    if not await emit_links(ctx, org, portal, [(p.project_id, p.record_type, p.record_id)], linked=False,
                            source="dissociate"):
        raise Refused("not_linked", f"project {p.project_id} is not associated with {p.record_type} {p.record_id}")


@router.on(requests.ProjectCreateFromRecord)
async def on_create_from_record(ctx: HandlerContext, event: Event[requests.ProjectCreateFromRecord]) -> None:
    p = event.payload
    org = event.org_id
    state = state_of(ctx)
    try:
        async with ctx.savepoint():
            await state.write_through(ctx.conn)
            await _create_from_record(ctx, event)
    except Refused as exc:
        await refuse(ctx, event, exc)
        if exc.code == "duplicate_email":
            await state.write_through(ctx.conn)  # the savepoint undid the rows written through: again
            user = await storage.get_actor(ctx.conn, org, p.acting_user_id)
            record = await storage.get_record(ctx.conn, org, p.record_type, p.record_id)
            named = ({"account_name" if record.record_type == "account" else "record_name": record.name}
                     if record is not None else {})
            await notify(ctx, org, user.actor() if user is not None else None, "duplicate_client_emails",
                         optional=False,
                         data={"reason": exc.reason, "reason_code": exc.code, **exc.details,
                               "record_type": p.record_type, "record_id": p.record_id,
                               **named, "project_name": p.name, "cause": "project_creation",
                               "occurred_at": event.envelope.occurred_at.isoformat()})


async def _create_from_record(ctx: HandlerContext, event: Event[requests.ProjectCreateFromRecord]) -> None:
    """S9, S19: one pm.project.create carries group, client company and client users, or nothing is sent."""
    p = event.payload
    org = event.org_id
    integ = await enabled_integration(ctx, org)
    await _linker(ctx, event)
    portal = integ.portal_id
    record = await _record(ctx, org, p.record_type, p.record_id)
    await _group(ctx, org, portal, p.group_id)
    grants = await _grants(ctx, org, list(p.crm_users))
    contacts = await _chosen_contacts(ctx, org, record, list(p.client_contact_ids), default_all=True)
    _check_duplicates(contacts)
    account_id = record.own_account_id
    account = await storage.get_record(ctx.conn, org, "account", account_id) if account_id else None
    company = await storage.get_pair(ctx.conn, org, portal, "account", account_id) if account_id else None
    paired = await storage.get_pairs(ctx.conn, org, portal, "contact", [c.record_id for c in contacts])
    existing = [paired[c.record_id] for c in contacts if c.record_id in paired]
    new_users = [cmd.NewClientUser(email=c.email, name=c.name, crm_contact_id=c.record_id, client_company_id=company)
                 for c in contacts if c.record_id not in paired and c.email]
    new_company = None
    if company is None and new_users:
        if account is None:
            raise Refused("no_client_company", "the contacts have no account to make a client company from")
        new_company = cmd.NewClientCompany(name=account.name, crm_account_id=account.record_id)
    records = [RecordRef(record_type=p.record_type, record_id=p.record_id)]
    if p.record_type == "deal" and account_id:
        records.append(RecordRef(record_type="account", record_id=account_id))
    command_id = uuid.uuid4()
    await emit_command(ctx, cmd.PmProjectCreate(
        command_id=command_id, portal_id=portal, name=p.name, description=p.description,
        owner_id=await _owner(ctx, org, p.owner_id), group_id=p.group_id, new_group_name=p.new_group_name,
        linked_records=records, users=grants, client_company_ids=[company] if company else [],
        client_user_ids=sorted(set(existing)), new_client_company=new_company, new_client_users=new_users),
        f"project:{command_id}", org)
    await storage.add_pending(ctx.conn, [rows.PendingCommand(command_id, org, "create_project", portal, {
        "records": [r.model_dump() for r in records], "trigger": "create_from_record"})])
    await ctx.emit(ProjectCreationRequested(command_id=command_id, portal_id=portal, trigger="create_from_record",
                                            records=records),
                   entity_key=f"{org}:request:{p.request_id}", origin="hub")
    count_project_requested(ctx, "create_from_record")
