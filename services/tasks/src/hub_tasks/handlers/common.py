"""What the task handlers share: the router (with the batch state), decisions, refusals, updates and the budget.

Every handler reads and changes the batch's `TasksState` (`ctx.state`), never the database: the state loaded
what the batch needs up front and writes it back in bulk. Metrics count through `ctx.after_commit`, so a
batch that is rolled back and retried does not count twice.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from prometheus_client import Counter

from hub_platform import metrics
from hub_platform.consumer import Handler, HandlerContext, Router
from hub_schema import Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events.common import RecordRef
from hub_schema.events.notifications import NotificationRequested, Recipient
from hub_schema.events.tasks import TaskMirrorDecided, TaskRequestRefused
from hub_tasks import domain
from hub_tasks.domain import Budget
from hub_tasks.records import Command, Decision, Integration, Mapping, User
from hub_tasks.state import TasksState

router = Router(state=TasksState.load)

PARKED = Counter("hub_tasks_parked_total", "Tasks parked: their command budget was used up (a loop stopped)",
                 registry=metrics.REGISTRY)
CONFLICTS = Counter("hub_tasks_conflicts_total", "Changes both sides refused (a revert or correction was refused too)",
                    ["side"], registry=metrics.REGISTRY)
BUDGET = Budget(30, timedelta(minutes=10))
"""The per-task command budget; `main.build` sets it from the settings (HUB_TASKS__*)."""
MAX_MIRRORED_RECORDS = domain.MAX_MIRRORED_RECORDS
"""Records one PM task is mirrored to at most; `main.build` sets it (HUB_TASKS__MAX_MIRRORED_RECORDS)."""

CHANGE_MODELS: dict[str, Any] = {
    "title": cmd.TitleChange, "description": cmd.DescriptionChange, "due_date": cmd.DueDateChange,
    "priority": cmd.PriorityChange, "status": cmd.StatusChange, "owner_id": cmd.OwnerChange,
}
NOTIFY_KIND = {"parent_task_closed": "subtask_update_failed", "schedule_fixed": "due_date_change_failed"}
DISABLED = ("integration_disabled", "the integration is disabled for this org (or not set up): nothing is mirrored")


def configure(budget: Budget, max_mirrored_records: int = domain.MAX_MIRRORED_RECORDS) -> None:
    global BUDGET, MAX_MIRRORED_RECORDS
    BUDGET, MAX_MIRRORED_RECORDS = budget, max_mirrored_records


def on(*payloads: type[Payload]) -> Callable[[Handler], Handler]:
    """`router.on`, and a state of its own for a handler called outside the platform's batch path (the bench's
    direct-database baseline calls handlers one by one): loaded for the one event, flushed after it."""

    def register(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def run(ctx: HandlerContext, event: Event[Any]) -> None:
            if ctx.state is not None:
                await fn(ctx, event)
                return
            ctx.state = await TasksState.load(ctx.conn, [event])
            await fn(ctx, event)
            await ctx.state.flush(ctx.conn)

        router.on(*payloads)(run)
        return fn

    return register


def state(ctx: HandlerContext) -> TasksState:
    st: TasksState = ctx.state
    return st


def enabled_of(integ: Integration | None, portal_id: str | None) -> tuple[bool, str | None]:
    """(enabled?, the enabled portal). A PM event of another portal counts as not enabled."""
    if integ is None or not integ.enabled:
        return False, None
    if portal_id is not None and integ.portal_id != portal_id:
        return False, integ.portal_id
    return True, integ.portal_id


async def enabled_for(ctx: HandlerContext, portal_id: str | None) -> tuple[bool, str | None]:
    return enabled_of(await state(ctx).integration(ctx.event.org_id), portal_id)


async def decide(ctx: HandlerContext, *, side: str, decision: str, code: str, reason: str,
                 hub_task_id: uuid.UUID | None = None, pm_task_id: str | None = None, crm_task_id: str | None = None,
                 fields: list[str] | tuple[str, ...] = ()) -> None:
    """Record a decision in the task's history and publish it."""
    org = ctx.event.org_id
    state(ctx).decide(Decision(org_id=org, hub_task_id=hub_task_id, pm_task_id=pm_task_id, crm_task_id=crm_task_id,
                               side=side, event_id=ctx.event.event_id, event_type=ctx.event.event_type,
                               decision=decision, reason_code=code, reason=reason, fields=list(fields)))
    subject = str(hub_task_id) if hub_task_id else f"{side}:{pm_task_id or crm_task_id}"
    await ctx.emit(TaskMirrorDecided(hub_task_id=hub_task_id, side=side, pm_task_id=pm_task_id, crm_task_id=crm_task_id,  # type: ignore[arg-type]
                                     decision=decision, reason_code=code, reason=reason[:2000],  # type: ignore[arg-type]
                                     fields=list(fields)),  # type: ignore[arg-type]
                   entity_key=f"{org}:task:{subject}")


@dataclass(frozen=True)
class Refusal:
    """A CRM-side request the hub refused: what is recorded, published and e-mailed to the acting user."""

    code: str
    reason: str
    acting_user_id: str | None
    hub_task_id: uuid.UUID | None = None
    crm_task_id: str | None = None
    pm_task_id: str | None = None
    record: RecordRef | None = None
    fields: tuple[str, ...] = ()
    notify_kind: str | None = None
    title: str | None = None


async def refuse(ctx: HandlerContext, r: Refusal) -> None:
    """A refusal: history, `tasks.request.refused` for the CRM side, and an e-mail to the acting user."""
    org = ctx.event.org_id
    await decide(ctx, side="crm", decision="refused", code=r.code, reason=r.reason, hub_task_id=r.hub_task_id,
                 pm_task_id=r.pm_task_id, crm_task_id=r.crm_task_id, fields=r.fields)
    subject = str(r.hub_task_id) if r.hub_task_id else f"crm:{r.crm_task_id}"
    await ctx.emit(TaskRequestRefused(hub_task_id=r.hub_task_id, crm_task_id=r.crm_task_id, pm_task_id=r.pm_task_id,
                                      record=r.record, acting_user_id=r.acting_user_id, reason_code=r.code,
                                      reason=r.reason, fields=list(r.fields)),  # type: ignore[arg-type]
                   entity_key=f"{org}:task:{subject}")
    u = await state(ctx).user(org, r.acting_user_id)
    if r.notify_kind is None or u is None:
        return
    await notify(ctx, u, r.notify_kind, f"{r.code}:{','.join(r.fields)}", await mail_data(ctx, r, u))


async def notify(ctx: HandlerContext, u: User, kind: str, what: str, data: dict[str, Any]) -> None:
    """A failure e-mail to a CRM user (never optional); its request id is derived from the causing event and
    `what`, so a replayed event asks for the same e-mail and notifications sends it once."""
    org = ctx.event.org_id
    request_id = uuid.uuid5(ctx.event.event_id, f"notify:{what}")
    await ctx.emit(NotificationRequested(
        request_id=request_id, kind=kind, optional=False,  # type: ignore[arg-type]
        recipient=Recipient(user_id=u.crm_user_id, email=u.email, name=u.name, locale=u.locale, time_zone=u.time_zone),
        data=data,
    ), entity_key=f"{org}:{request_id}")


async def names_for_mail(ctx: HandlerContext, r: Refusal) -> dict[str, Any]:
    """record_name/record_url, project_name and parent_task_name of a refused task, as far as they are known."""
    st, org = state(ctx), ctx.event.org_id
    record = await st.name(org, r.record.record_type, r.record.record_id) if r.record else None
    m = await st.mapping(org, r.hub_task_id) if r.hub_task_id else None
    task = await st.pm_task(org, r.pm_task_id or (m.pm_task_id if m else None))
    project = await st.name(org, "project", m.project_id if m else task.project_id if task else None)
    parent = await st.pm_task(org, task.parent_task_id if task else None)
    names = {"record_name": record.name if record else None, "record_url": record.url if record else None,
             "project_name": project.name if project else None,
             "parent_task_name": parent.fields.get("title") if parent else None}
    return {k: v for k, v in names.items() if v is not None}


async def mail_data(ctx: HandlerContext, r: Refusal, acting_user: User) -> dict[str, Any]:
    """What the refusal e-mail says (hub_schema notifications.py): names, not ids; the reason as a code and the
    names it mentions, so the mail is worded in the reader's language; when it happened."""
    names = await names_for_mail(ctx, r)
    user_state = "inactive" if not acting_user.active else "not_allowed"
    params = {k: v for k, v in {**names, "record_type": r.record.record_type if r.record else None,
                                "user_name": acting_user.name, "user_state": user_state}.items()
              if v is not None and k != "record_url"}
    return {"reason_code": r.code, "reason_params": params, "reason": r.reason, "crm_task_id": r.crm_task_id,
            "pm_task_id": r.pm_task_id, "task_name": r.title or "-", "task_id": r.crm_task_id or r.pm_task_id,
            **({"record_type": r.record.record_type, "record_id": r.record.record_id} if r.record else {}),
            **names, "occurred_at": ctx.event.envelope.occurred_at.isoformat(), "fields": list(r.fields)}


async def to_side(ctx: HandlerContext, side: str, values: dict[str, Any]) -> dict[str, Any]:
    """Canonical values as the target side spells them (the owner becomes a portal user for the PM tool)."""
    out = dict(values)
    if side == "pm" and out.get("owner_id") is not None:
        u = await state(ctx).user(ctx.event.org_id, out["owner_id"])
        if u is None or u.portal_user_id is None:
            out.pop("owner_id")
        else:
            out["owner_id"] = u.portal_user_id
    return out


def change_list(values: dict[str, Any]) -> list[Any]:
    changes = []
    for f in domain.FIELDS:
        if f in values:
            v = values[f]
            if f == "due_date" and v is not None:
                v = date.fromisoformat(v)
            changes.append(CHANGE_MODELS[f](field=f, value=v))
    return changes


async def within_budget(ctx: HandlerContext, m: Mapping, origin: str) -> bool:
    """Spend one command of the task's budget; park the task when it is used up.

    A parked task sends nothing (each change is recorded as skipped: parked) until `resume`."""
    if m.parked_at is not None:
        await decide(ctx, side=origin, decision="skipped", code="parked",
                     reason=f"the task is parked since {m.parked_at.isoformat()} ({m.parked_reason}); nothing "
                            "is sent until a real edit on either side or a resync", **m.ids())
        return False
    now = datetime.now(timezone.utc)
    spent = domain.spend(BUDGET, m.budget_window_start, m.budget_used or 0, now)
    m.budget_window_start, m.budget_used = spent.window_start, spent.used
    state(ctx).save_mapping(m)
    if spent.allowed:
        return True
    window = int(BUDGET.window.total_seconds())
    reason = (f"command budget used up: {BUDGET.limit} commands within {window} s for this task; parked until a "
              "real edit on either side or a resync (a loop the other rules did not stop)")
    m.parked_at, m.parked_reason = now, reason
    ctx.after_commit(PARKED.inc)
    ctx.log.error("ALERT task parked: command budget used up", alert="task_parked", hub_task_id=str(m.hub_task_id),
                  pm_task_id=m.pm_task_id, crm_task_id=m.crm_task_id, budget=BUDGET.limit, window_seconds=window)
    await decide(ctx, side=origin, decision="parked", code="command_budget", reason=reason, **m.ids())
    return False


async def resume(ctx: HandlerContext, m: Mapping, side: str, code: str, reason: str) -> None:
    """Un-park a task (a real edit or a resync) with a fresh budget."""
    if m.parked_at is None:
        return
    m.parked_at = m.parked_reason = m.budget_window_start = None
    m.budget_used = 0
    state(ctx).save_mapping(m)
    await decide(ctx, side=side, decision="resumed", code=code, reason=reason, **m.ids())


def record_command(ctx: HandlerContext, payload: Any, m_or_id: Mapping | uuid.UUID, target: str, changes: dict[str, Any],
                   source_at: dict[str, str], acting_user_id: str | None, cause: str = "change",
                   reverts: uuid.UUID | None = None) -> None:
    """Remember a command sent (its echo and its rejection are recognised by its id)."""
    hub_task_id = m_or_id.hub_task_id if isinstance(m_or_id, Mapping) else m_or_id
    state(ctx).add_command(Command(command_id=payload.command_id, hub_task_id=hub_task_id, org_id=ctx.event.org_id,
                                   target=target, kind=payload.EVENT_TYPE, changes=changes, source_at=source_at,
                                   acting_user_id=acting_user_id, cause=cause, reverts_command_id=reverts))


async def send_update(ctx: HandlerContext, m: Mapping, target: str, canon_changes: dict[str, Any],
                      source_at: dict[str, str], acting_user_id: str | None, *,
                      cause: str = "change", reverts: uuid.UUID | None = None) -> bool:
    """Send the target side an update of `canon_changes`; False when there is nothing it can be told, or the task
    is (now) parked. Spends the task's command budget.

    `cause`: `change`, `correction` or `revert` (of the refused command `reverts`), see domain.take_back."""
    target_id = m.task_id_of(target)
    if target_id is None or not canon_changes:
        return False  # the record is still being created: the create's echo brings the diff
    side_values = await to_side(ctx, target, canon_changes)
    if not side_values:
        return False
    if not await within_budget(ctx, m, domain.other(target) if cause == "change" else target):
        return False
    command_id = uuid.uuid4()
    changes = change_list(side_values)
    if target == "pm":
        payload: Any = cmd.PmTaskUpdate(command_id=command_id, hub_task_id=m.hub_task_id, portal_id=m.portal_id,
                                        project_id=m.project_id, task_id=target_id,
                                        base_version=m.pm_version or 0, changes=changes)
    else:
        payload = cmd.CrmTaskUpdate(command_id=command_id, hub_task_id=m.hub_task_id, task_id=target_id,
                                    base_version=m.crm_version or 0, changes=changes)
    sent = {f: canon_changes[f] for f in side_values}
    record_command(ctx, payload, m, target, sent, {f: source_at[f] for f in sent if f in source_at}, acting_user_id,
                   cause, reverts)
    await ctx.emit(payload, entity_key=f"task:{target_id}")
    return True
