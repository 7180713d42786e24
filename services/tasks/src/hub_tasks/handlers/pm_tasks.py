"""PM-side tasks: a flagged PM task is created on each linked record (S5), its changes mirror, comments become notes."""

from __future__ import annotations

import uuid
from typing import Any

from hub_platform.consumer import HandlerContext
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import pm
from hub_tasks import domain
from hub_tasks.domain import Guard
from hub_tasks.handlers import common
from hub_tasks.handlers.common import DISABLED, decide, enabled_for, notify, on, record_command, state
from hub_tasks.handlers.mapping import apply_to_mapping, bind_created, mirror_pm_task_to_record
from hub_tasks.records import PmTask


async def pm_values(ctx: HandlerContext, p: pm.PmTaskUpserted) -> dict[str, Any]:
    """A PM task in canonical terms; an owner with no matching CRM user is left out (never cleared)."""
    values: dict[str, Any] = {"title": p.title, "description": p.description,
                              "due_date": p.due_date.isoformat() if p.due_date else None,
                              "priority": p.priority, "status": p.status}
    if p.owner_id is None:
        values["owner_id"] = None
    else:
        owner = await state(ctx).crm_user_of_portal_user(ctx.event.org_id, p.owner_id)
        if owner is not None:
            values["owner_id"] = owner
    return values


@on(pm.PmTaskUpserted)
async def on_pm_task(ctx: HandlerContext, event: Event[pm.PmTaskUpserted]) -> None:
    p = event.payload
    org = event.org_id
    st = state(ctx)
    known = await st.pm_task(org, p.id)
    if known is not None and p.version <= known.version:
        await decide(ctx, side="pm", decision="skipped", code="stale",
                     reason=f"version {p.version} is not newer than the applied version {known.version}", pm_task_id=p.id)
        return
    values = await pm_values(ctx, p)
    snap = PmTask(org_id=org, task_id=p.id, portal_id=p.portal_id, project_id=p.project_id, parent_task_id=p.parent_task_id,
                  status=p.status, recurring=p.recurring, add_to_crm=p.add_to_crm, fields=values,
                  modified_at=p.modified_at, version=p.version)
    st.save_pm_task(snap)
    c = await st.command(org, p.command_id)
    if c is not None and c.kind == "pm.task.create":
        await bind_created(ctx, c, "pm", p.id, p.version, values)
        return
    enabled, _ = await enabled_for(ctx, p.portal_id)
    mappings = await st.mappings_of_pm_task(org, p.id)
    if not mappings:
        skip = domain.pm_task_skip_reason(recurring=p.recurring, add_to_crm=p.add_to_crm)
        if skip is not None:
            await decide(ctx, side="pm", decision="skipped", code=skip[0], reason=skip[1], pm_task_id=p.id)
            return
        if not enabled:
            await decide(ctx, side="pm", decision="skipped", code=DISABLED[0], reason=DISABLED[1], pm_task_id=p.id)
            return
        records = [r for r in await st.links_of_project(org, p.portal_id, p.project_id)
                   if r.record_type in domain.MIRRORED_RECORD_TYPES]
        if not records:
            await decide(ctx, side="pm", decision="skipped", code="no_linked_record",
                         reason=f"project {p.project_id} is not linked to any contact, account or deal", pm_task_id=p.id)
            return
        too_many = domain.too_many_records(len(records), common.MAX_MIRRORED_RECORDS, p.project_id)
        if too_many is not None:
            await refuse_fan_out(ctx, snap, too_many, len(records), tell=known is None or not known.add_to_crm)
            return
        for r in records:
            await mirror_pm_task_to_record(ctx, snap, values, r, "created",
                                           f"PM task created with \"add to CRM\": created on {r.record_type} {r.record_id}")
        return
    for m in mappings:
        if m.pm_version is not None and p.version <= m.pm_version:
            continue
        await apply_to_mapping(ctx, m, "pm", values, p.modified_at.isoformat(), p.version, c, enabled, Guard(),
                               None, p.title)


async def refuse_fan_out(ctx: HandlerContext, snap: PmTask, why: tuple[str, str], count: int, *, tell: bool) -> None:
    """A flagged PM task on a project with too many linked records: refused, recorded, and its owner (as a CRM
    user) e-mailed the first time the task asks to be mirrored; a later edit is recorded again, not e-mailed again.
    Once records are unlinked, the task's next edit (or a resync) mirrors it."""
    code, reason = why
    await decide(ctx, side="pm", decision="refused", code=code, reason=reason, pm_task_id=snap.task_id)
    st, org = state(ctx), ctx.event.org_id
    owner = await st.user(org, snap.fields.get("owner_id"))
    if not tell or owner is None:
        return
    project = await st.name(org, "project", snap.project_id)
    names = {"project_name": project.name} if project else {}
    await notify(ctx, owner, "task_create_refused", code, {
        "reason_code": code, "reason": reason,
        "reason_params": {**names, "record_count": count, "limit": common.MAX_MIRRORED_RECORDS},
        "task_name": snap.fields.get("title") or "-", "task_id": snap.task_id, "pm_task_id": snap.task_id,
        **names, "occurred_at": ctx.event.envelope.occurred_at.isoformat()})


@on(pm.PmTaskDeleted)
async def on_pm_task_deleted(ctx: HandlerContext, event: Event[pm.PmTaskDeleted]) -> None:
    p = event.payload
    st = state(ctx)
    known = await st.pm_task(event.org_id, p.id)
    if known is not None and p.version <= known.version:
        return
    if known is None:
        known = PmTask(org_id=event.org_id, task_id=p.id, portal_id=p.portal_id, project_id=p.project_id,
                       parent_task_id=None, status="closed", recurring=False, add_to_crm=False, fields={},
                       modified_at=p.modified_at, version=p.version)
    known.deleted, known.version = True, p.version
    st.save_pm_task(known)
    for m in await st.mappings_of_pm_task(event.org_id, p.id):
        await decide(ctx, side="pm", decision="skipped", code="delete_not_mirrored",
                     reason="the PM task was deleted; deletes are not mirrored", hub_task_id=m.hub_task_id,
                     pm_task_id=p.id, crm_task_id=m.crm_task_id)


@on(pm.PmCommentAdded)
async def on_pm_comment(ctx: HandlerContext, event: Event[pm.PmCommentAdded]) -> None:
    """S5: a comment on a mirrored PM task becomes a note on each linked record it was mirrored to."""
    p = event.payload
    org = event.org_id
    mappings = await state(ctx).mappings_of_pm_task(org, p.task_id)
    if not mappings:
        await decide(ctx, side="pm", decision="skipped", code="not_mirrored",
                     reason=f"comment {p.id}: the PM task {p.task_id} is not mirrored to the CRM", pm_task_id=p.task_id)
        return
    enabled, _ = await enabled_for(ctx, p.portal_id)
    for m in mappings:
        if p.command_id is not None:
            await decide(ctx, side="pm", decision="skipped", code="echo", reason="comment written by the hub", **m.ids())
            continue
        if not enabled:
            await decide(ctx, side="pm", decision="skipped", code=DISABLED[0], reason=DISABLED[1], **m.ids())
            continue
        payload = cmd.CrmNoteAdd(command_id=uuid.uuid4(), hub_task_id=m.hub_task_id, pm_comment_id=p.id,
                                 record_type=m.record_type, record_id=m.record_id, title=m.state.canon.get("title"),
                                 body=p.body, author_name=p.author_name)
        record_command(ctx, payload, m, "crm", {}, {}, None)
        await ctx.emit(payload, entity_key=f"{m.record_type}:{m.record_id}")
        await decide(ctx, side="pm", decision="mirrored", code="comment_to_note",
                     reason=f"comment {p.id} added as a note on {m.record_type} {m.record_id}", **m.ids())
