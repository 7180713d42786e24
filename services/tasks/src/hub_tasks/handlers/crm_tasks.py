"""CRM-side tasks: "add to the PM tool" creates a PM task in the linked project (S12), changes mirror (S10/S11)."""

from __future__ import annotations

import uuid
from typing import Any

from hub_platform.consumer import HandlerContext
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm
from hub_schema.events.common import RecordRef
from hub_tasks import domain
from hub_tasks.domain import Guard, State
from hub_tasks.handlers.common import DISABLED, Refusal, decide, enabled_for, on, record_command, refuse, state, to_side
from hub_tasks.handlers.mapping import apply_to_mapping, bind_created
from hub_tasks.records import CrmTask, Mapping


def crm_values(p: crm.CrmTaskUpserted) -> dict[str, Any]:
    return {"title": p.subject, "description": p.description,
            "due_date": p.due_date.isoformat() if p.due_date else None,
            "priority": p.priority, "status": p.status, "owner_id": p.owner_id}


async def guard_of(ctx: HandlerContext, m: Mapping) -> Guard:
    """The facts the S10/S11 rules check for a CRM-side change: the PM task's parent, the project's schedule."""
    st, org = state(ctx), ctx.event.org_id
    task = await st.pm_task(org, m.pm_task_id)
    project = await st.project(org, m.project_id)
    schedule_fixed = bool(project.schedule_fixed) if project is not None else False
    if task is None or not task.parent_task_id:
        return Guard(schedule_fixed=schedule_fixed)
    parent = await st.pm_task(org, task.parent_task_id)
    closed = parent is not None and parent.status == "closed" and not parent.deleted
    return Guard(parent_closed=closed, parent_task_id=task.parent_task_id, schedule_fixed=schedule_fixed)


@on(crm.CrmTaskUpserted)
async def on_crm_task(ctx: HandlerContext, event: Event[crm.CrmTaskUpserted]) -> None:
    p = event.payload
    org = event.org_id
    st = state(ctx)
    known = await st.crm_task(org, p.id)
    if known is not None and p.version <= known.version:
        await decide(ctx, side="crm", decision="skipped", code="stale",
                     reason=f"version {p.version} is not newer than the applied version {known.version}", crm_task_id=p.id)
        return
    values = crm_values(p)
    acting = p.acting_user_id or p.created_by
    st.save_crm_task(CrmTask(org_id=org, task_id=p.id, record_type=p.record_type or (known.record_type if known else ""),
                             record_id=p.record_id or (known.record_id if known else ""), version=p.version))
    c = await st.command(org, p.command_id)
    if c is not None and c.kind == "crm.task.create":
        await bind_created(ctx, c, "crm", p.id, p.version, values)
        return
    enabled, portal_id = await enabled_for(ctx, None)
    m = await st.mapping_of_crm_task(org, p.id)
    if m is not None:
        await apply_to_mapping(ctx, m, "crm", values, p.modified_at.isoformat(), p.version, c, enabled,
                               await guard_of(ctx, m), acting, p.subject)
        return
    if not p.add_to_pm:
        await decide(ctx, side="crm", decision="skipped", code="not_flagged",
                     reason="the CRM task was not saved with \"add to the PM tool\"", crm_task_id=p.id)
        return
    if not enabled or portal_id is None:
        await decide(ctx, side="crm", decision="skipped", code=DISABLED[0], reason=DISABLED[1], crm_task_id=p.id)
        return
    record = RecordRef(record_type=p.record_type, record_id=p.record_id)
    linked = [domain.LinkedProject(r.portal_id, r.project_id)
              for r in await st.links_of_record(org, portal_id, p.record_type, p.record_id)]
    choice = domain.choose_project(p.record_type, p.record_id, linked, p.pm_project_id)
    denied = choice if isinstance(choice, tuple) else domain.may_add_task(await st.user(org, acting))
    if denied is not None:
        await refuse(ctx, Refusal(code=denied[0], reason=denied[1], acting_user_id=acting, crm_task_id=p.id, record=record,
                                  notify_kind="task_create_refused", title=p.subject))
        return
    assert isinstance(choice, domain.LinkedProject)
    hub_task_id = uuid.uuid4()
    modified_at = p.modified_at.isoformat()
    parent_pm = None
    if p.parent_task_id:
        parent = await st.mapping_of_crm_task(org, p.parent_task_id)
        parent_pm = parent.pm_task_id if parent else None
    st.add_mapping(Mapping(hub_task_id=hub_task_id, org_id=org, origin="crm", portal_id=choice.portal_id,
                           project_id=choice.project_id, pm_task_id=None, record_type=p.record_type,
                           record_id=p.record_id, crm_task_id=p.id, state=State.initial("crm", values, modified_at),
                           pm_version=None, crm_version=p.version))
    side_values = await to_side(ctx, "pm", values)
    payload = cmd.PmTaskCreate(command_id=uuid.uuid4(), hub_task_id=hub_task_id, portal_id=choice.portal_id,
                               project_id=choice.project_id, title=p.subject, description=p.description,
                               due_date=p.due_date, priority=p.priority, status=p.status,
                               owner_id=side_values.get("owner_id"), parent_task_id=parent_pm)
    record_command(ctx, payload, hub_task_id, "pm", values, {f: modified_at for f in values}, acting)
    await ctx.emit(payload, entity_key=f"task:{hub_task_id}")
    await decide(ctx, side="crm", decision="mirrored", code="created",
                 reason=f"CRM task added to project {choice.project_id}", hub_task_id=hub_task_id, crm_task_id=p.id,
                 fields=list(values))


@on(crm.CrmTaskDeleted)
async def on_crm_task_deleted(ctx: HandlerContext, event: Event[crm.CrmTaskDeleted]) -> None:
    p = event.payload
    st = state(ctx)
    known = await st.crm_task(event.org_id, p.id)
    if known is not None and p.version <= known.version:
        return
    st.save_crm_task(CrmTask(org_id=event.org_id, task_id=p.id, record_type=known.record_type if known else "",
                             record_id=known.record_id if known else "", version=p.version, deleted=True))
    m = await st.mapping_of_crm_task(event.org_id, p.id)
    if m is not None:
        await decide(ctx, side="crm", decision="skipped", code="delete_not_mirrored",
                     reason="the CRM task was deleted; deletes are not mirrored", hub_task_id=m.hub_task_id,
                     pm_task_id=m.pm_task_id, crm_task_id=p.id)
