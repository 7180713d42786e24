"""An upstream refused one of the hub's commands: the refused values are taken back, the other side reverted.

A refused revert or correction ends the exchange: one `conflict` in the history, nothing sent, no e-mail
(the person who made the change was told when the change itself was refused).
"""

from __future__ import annotations

from typing import Any

from hub_platform.consumer import HandlerContext
from hub_schema import Event
from hub_schema.events import crm, pm
from hub_schema.events.common import RecordRef
from hub_tasks import domain
from hub_tasks.handlers.common import CONFLICTS, NOTIFY_KIND, Refusal, decide, on, refuse, send_update, state
from hub_tasks.records import Command, Mapping


@on(pm.PmCommandRejected, crm.CrmCommandRejected)
async def on_command_rejected(ctx: HandlerContext, event: Event[Any]) -> None:
    p = event.payload
    st = state(ctx)
    c = await st.command(event.org_id, p.command_id)
    if c is None:
        return  # another service's command
    st.set_outcome(c, f"rejected:{p.reason_code}")
    m = await st.mapping(event.org_id, c.hub_task_id)
    assert m is not None
    target = c.target
    source = domain.other(target)
    fields = tuple(f for f in domain.FIELDS if f in c.changes)
    if c.cause in domain.FOLLOW_UPS:
        await both_refused(ctx, m, c, p.reason_code, p.reason)
        return
    revert: dict[str, Any] = {}
    if c.kind.endswith(".update"):
        revert = domain.take_back(m.state, target, c.changes, cause=c.cause,
                                  occurred_at=event.envelope.occurred_at.isoformat()).revert
        st.save_mapping(m)
    reason = f"the {target.upper()} side refused the change: {p.reason}"
    if source == "crm":
        await refuse(ctx, Refusal(code=p.reason_code, reason=reason, acting_user_id=c.acting_user_id,
                                  record=RecordRef(record_type=m.record_type, record_id=m.record_id),  # type: ignore[arg-type]
                                  fields=fields, notify_kind=NOTIFY_KIND.get(p.reason_code, "task_update_failed"),
                                  title=m.state.canon.get("title"), **m.ids()))
    else:
        await decide(ctx, side=source, decision="refused", code=p.reason_code, reason=reason, fields=fields, **m.ids())
    if revert:
        await send_update(ctx, m, source, revert, {f: m.state.canon_at[f][0] for f in revert}, None,
                          cause="revert", reverts=c.command_id)


async def both_refused(ctx: HandlerContext, m: Mapping, c: Command, code: str, why: str) -> None:
    """The `target` side refused a revert or correction: the other side had already refused (or lost) the change.

    A `version_conflict` is no refusal of the values: the record changed after the command's base version, and
    that change (ordered before this rejection on the record's key) is already merged here; what is still agreed
    and missing on the target is sent once more against the newest version. That repeats only if the record
    changes again in between (and the command budget bounds even that)."""
    target = c.target
    ids = m.ids()
    tb = domain.take_back(m.state, target, c.changes, cause=c.cause, occurred_at="", code=code)
    conflict, again = tb.conflict, tb.retry
    what = "the revert of a change the other side refused" if c.cause == "revert" else \
        "the correction of a change the hub could not carry over"
    if again:
        state(ctx).save_mapping(m)
        if await send_update(ctx, m, target, again, {f: m.state.canon_at[f][0] for f in again}, c.acting_user_id,
                             cause=c.cause, reverts=c.reverts_command_id):
            await decide(ctx, side=target, decision="skipped", code="retried",
                         reason=f"the {target.upper()} side's task changed after {what} was sent ({why}); sent again "
                                "against its newest version", fields=list(again), **ids)
        return
    if not conflict:
        await decide(ctx, side=target, decision="skipped", code="superseded",
                     reason=f"the {target.upper()} side refused {what} ({why}), which a newer change has made moot",
                     fields=[f for f in domain.FIELDS if f in c.changes], **ids)
        return
    state(ctx).save_mapping(m)  # the fields left apart, for the next real edit to heal (domain.heal)
    ctx.after_commit(CONFLICTS.labels(target).inc)
    ctx.log.warning("both sides refused a change: conflict recorded, nothing more sent", hub_task_id=str(ids["hub_task_id"]),
                    command_id=str(c.command_id), reverts_command_id=str(c.reverts_command_id), reason_code=code)
    await decide(ctx, side=target, decision="conflict", code=code,
                 reason=f"both sides refused: the {target.upper()} side refused {what} ({why}); the sides differ in "
                        f"{', '.join(conflict)} and the hub sends nothing more for this change, until the next real "
                        "edit on either side", fields=conflict, **ids)
