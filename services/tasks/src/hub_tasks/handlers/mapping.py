"""One mapping's life: created for a flagged PM task, bound by the create's echo, changed by either side."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from hub_platform.consumer import HandlerContext
from hub_schema.events import commands as cmd
from hub_schema.events.common import RecordRef
from hub_tasks import domain
from hub_tasks.domain import Echo, Guard, State
from hub_tasks.handlers.common import (DISABLED, NOTIFY_KIND, Refusal, decide, enabled_for, record_command, refuse,
                                       resume, send_update, state)
from hub_tasks.records import Command, Link, Mapping, PmTask


async def mirror_pm_task_to_record(ctx: HandlerContext, snap: PmTask, values: dict[str, Any], record: Link,
                                   reason_code: str, reason: str) -> None:
    """S5: create the CRM task for a flagged PM task on one linked record."""
    st, org = state(ctx), ctx.event.org_id
    hub_task_id = uuid.uuid4()
    modified_at = snap.modified_at.isoformat()
    # The parent's mapping on the same record: another PM task's (or, were a task its own parent, this very
    # key's, whose new mapping has no CRM id yet), so it is read before this one is added.
    parent_crm = None
    if snap.parent_task_id:
        parent_crm = next((p.crm_task_id for p in await st.mappings_of_pm_task(org, snap.parent_task_id)
                           if (p.record_type, p.record_id) == (record.record_type, record.record_id)), None)
    st.add_mapping(Mapping(hub_task_id=hub_task_id, org_id=org, origin="pm", portal_id=snap.portal_id,
                           project_id=snap.project_id, pm_task_id=snap.task_id, record_type=record.record_type,
                           record_id=record.record_id, crm_task_id=None, state=State.initial("pm", values, modified_at),
                           pm_version=snap.version, crm_version=None))
    due = values.get("due_date")
    payload = cmd.CrmTaskCreate(command_id=uuid.uuid4(), hub_task_id=hub_task_id, record_type=record.record_type,
                                record_id=record.record_id, subject=values["title"], description=values["description"],
                                due_date=date.fromisoformat(due) if due else None, priority=values["priority"],
                                status=values["status"], owner_id=values.get("owner_id"), parent_task_id=parent_crm)
    record_command(ctx, payload, hub_task_id, "crm", values, {f: modified_at for f in values}, None)
    await ctx.emit(payload, entity_key=f"task:{hub_task_id}")
    await decide(ctx, side="pm", decision="mirrored", code=reason_code, reason=reason, hub_task_id=hub_task_id,
                 pm_task_id=snap.task_id, fields=list(values))


async def bind_created(ctx: HandlerContext, c: Command, side: str, task_id: str, version: int,
                       values: dict[str, Any]) -> None:
    """The echo of a create command: learn the new record's id; push anything agreed since."""
    st = state(ctx)
    m = await st.mapping(ctx.event.org_id, c.hub_task_id)
    assert m is not None
    m.state.bind(side, values)
    st.bind(m, side, task_id, version)
    st.set_outcome(c, "applied")
    await decide(ctx, side=side, decision="skipped", code="echo",
                 reason=f"the {side.upper()} side created the task the hub asked for (command {c.command_id}); not mirrored back",
                 **m.ids())
    enabled, _ = await enabled_for(ctx, None)
    behind = {f: v for f, v in m.state.canon.items() if m.state.seen(side).get(f, object()) != v}
    if enabled and behind:
        if await send_update(ctx, m, side, behind, {f: m.state.canon_at[f][0] for f in behind}, c.acting_user_id):
            await decide(ctx, side=domain.other(side), decision="mirrored", code="changed",
                         reason="changes made while the task was being created", fields=list(behind), **m.ids())


async def apply_to_mapping(ctx: HandlerContext, m: Mapping, side: str, values: dict[str, Any], modified_at: str,
                           version: int, echo_cmd: Command | None, enabled: bool, guard: Guard,
                           acting_user_id: str | None, title: str | None) -> None:
    """Merge one change into one mapping, push the results, record every decision."""
    st = state(ctx)
    echo = Echo(echo_cmd.changes, echo_cmd.source_at) if echo_cmd else None
    out = domain.apply_change(m.state, side, values, modified_at, echo=echo, enabled=enabled, guard=guard)
    if side == "pm":
        m.pm_version = version
    else:
        m.crm_version = version
    st.save_mapping(m)
    ids = m.ids()
    if echo_cmd is not None:
        st.set_outcome(echo_cmd, "applied")
    if not out.changed:
        if echo_cmd is not None:
            await decide(ctx, side=side, decision="skipped", code="echo",
                         reason=f"change caused by the hub (command {echo_cmd.command_id}); not mirrored back", **ids)
        else:
            await decide(ctx, side=side, decision="skipped", code="no_change", reason="no mirrored field changed", **ids)
        return
    if not enabled:
        await decide(ctx, side=side, decision="skipped", code=DISABLED[0], reason=DISABLED[1], fields=out.changed, **ids)
        return
    if echo_cmd is None:
        await resume(ctx, m, side, "real_edit", f"a real edit in the {side.upper()} side resumes the parked task")
    target = domain.other(side)
    if out.push_other:
        await send_update(ctx, m, target, out.push_other, out.source_at, acting_user_id)
        edited = [f for f in out.push_other if f not in out.healed]
        if m.parked_at is None and edited:
            await decide(ctx, side=side, decision="mirrored", code="changed",
                         reason=f"changed in the {side.upper()} side; sent to the {target.upper()} side",
                         fields=edited, **ids)
    if out.healed and m.parked_at is None:
        await decide(ctx, side=side, decision="mirrored", code="healed",
                     reason=f"an earlier conflict had left the sides apart in {', '.join(sorted(set(out.healed)))}; this "
                            f"real edit in the {side.upper()} side sends the agreed values to the side that differs",
                     fields=sorted(set(out.healed)), **ids)
    refused = [r[0] for r in out.refused]
    settled = [f for f in out.changed if f not in out.push_other and f not in out.lost and f not in refused]
    if settled:
        if echo_cmd is not None:
            reason = f"change caused by the hub (command {echo_cmd.command_id}); not mirrored back"
            code = "echo"
        else:
            reason, code = "the other side already holds the same values", "already_equal"
        await decide(ctx, side=side, decision="skipped", code=code, reason=reason, fields=settled, **ids)
    if out.lost:
        await decide(ctx, side=side, decision="skipped", code="conflict_lost",
                     reason="a newer change on the other side wins (newest modified_at per field; ties go to the PM side); "
                            "the winning value is written back", fields=out.lost, **ids)
    for f, code, reason in out.refused:
        await refuse(ctx, Refusal(code=code, reason=reason, acting_user_id=acting_user_id,
                                  record=RecordRef(record_type=m.record_type, record_id=m.record_id),  # type: ignore[arg-type]
                                  fields=(f,), notify_kind=NOTIFY_KIND.get(code, "task_update_failed"), title=title,
                                  **ids))
    if out.push_self:
        await send_update(ctx, m, side, out.push_self, out.source_at, None, cause="correction")
