"""S7: an administrator's resync reconciles every mapped task and back-fills flagged PM tasks not yet mirrored."""

from __future__ import annotations

from hub_platform.consumer import HandlerContext
from hub_schema import Event
from hub_schema.events import linking
from hub_tasks import domain
from hub_tasks.handlers import common
from hub_tasks.handlers.common import decide, enabled_for, on, resume, send_update, state
from hub_tasks.handlers.mapping import mirror_pm_task_to_record


@on(linking.ResyncRequested)
async def on_resync(ctx: HandlerContext, event: Event[linking.ResyncRequested]) -> None:
    """Winner per field by the conflict policy for every mapping; mirror what was missed."""
    p = event.payload
    org = event.org_id
    st = state(ctx)
    enabled, _ = await enabled_for(ctx, p.portal_id)
    if not enabled:
        ctx.log.warning("resync requested while the integration is not enabled for the portal; ignored", portal_id=p.portal_id)
        return
    for m in await st.mappings_of_org(org, p.portal_id):
        to_pm, to_crm = domain.reconcile(m.state)
        st.save_mapping(m)
        await resume(ctx, m, "crm", "resync", "an administrator's resync resumes the parked task")
        for target, changes in (("crm", to_crm), ("pm", to_pm)):
            if changes and await send_update(ctx, m, target, changes, {f: m.state.canon_at[f][0] for f in changes},
                                             p.requested_by):
                await decide(ctx, side=domain.other(target), decision="mirrored", code="resync",
                             reason=f"resync: the {domain.other(target).upper()} side's newer values sent to the "
                                    f"{target.upper()} side", fields=list(changes), **m.ids())
    for snap in await st.flagged_pm_tasks(org, p.portal_id):
        records = [r for r in await st.links_of_project(org, p.portal_id, snap.project_id)
                   if r.record_type in domain.MIRRORED_RECORD_TYPES]
        too_many = domain.too_many_records(len(records), common.MAX_MIRRORED_RECORDS, snap.project_id)
        if too_many is not None:
            await decide(ctx, side="pm", decision="refused", code=too_many[0], reason=f"resync: {too_many[1]}",
                         pm_task_id=snap.task_id)
            continue
        mapped = {(m.record_type, m.record_id) for m in await st.mappings_of_pm_task(org, snap.task_id)}
        for r in records:
            if (r.record_type, r.record_id) not in mapped:
                await mirror_pm_task_to_record(ctx, snap, dict(snap.fields), r, "resync",
                                               f"resync: PM task not yet mirrored, created on {r.record_type} {r.record_id}")
