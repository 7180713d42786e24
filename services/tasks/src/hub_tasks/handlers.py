"""Handlers of the task-mirroring service: projections, PM ↔ CRM task changes, comments, refusals, resync.

Decisions taken deliberately:
- Unknown org or integration not enabled (or an event from another portal than
  the enabled one): nothing is mirrored; the change is recorded in the history
  as skipped(integration_disabled) and each side's latest values are still
  tracked, so an explicit resync (`linking.resync.requested`, S7) can reconcile.
  Re-enabling alone back-fills nothing.
- A PM task mirrors to one CRM task per linked contact, account and deal of
  its project (one mapping = one `hub_task_id` per pair); leads are not used.
- S10/S11 are decided here from the projections before anything is sent; a
  refused CRM change is reverted on the CRM side (so both sides agree again),
  a `tasks.request.refused` is published and the acting CRM user is e-mailed.
  The same happens when the PM tool itself rejects a hub command.
- Deletes are recorded but not mirrored.
- Every decision goes to `task_decisions` and is published as `tasks.mirror.decided`.
- Two sides that both say no (issue 14): a refused revert or correction is recorded as one `conflict` and
  nothing more is sent for that change (no second e-mail either); the next real edit on either side goes
  through as usual. One upstream change causes at most `domain.MAX_COMMANDS_PER_CHANGE` (3) commands.
  Whatever else might loop is stopped by the per-task command budget (`HUB_TASKS__COMMAND_BUDGET` commands
  per `HUB_TASKS__BUDGET_WINDOW_SECONDS`): the task is parked (`parked` in its history, the
  `hub_tasks_parked_total` metric, an alert log line) and sends nothing until a real edit or a resync.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from prometheus_client import Counter

from hub_platform import metrics, service_keys
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event
from hub_schema.events import commands as cmd
from hub_schema.events import crm, identity, linking, pm
from hub_schema.events.common import RecordRef
from hub_schema.events.notifications import NotificationRequested, Recipient
from hub_schema.events.tasks import TaskMirrorDecided, TaskRequestRefused
from hub_tasks import domain, storage
from hub_tasks.domain import Budget, Echo, Guard, State

router = Router()
router.include(service_keys.router)  # the org keys that open the history API

PARKED = Counter("hub_tasks_parked_total", "Tasks parked: their command budget was used up (a loop stopped)",
                 registry=metrics.REGISTRY)
CONFLICTS = Counter("hub_tasks_conflicts_total", "Changes both sides refused (a revert or correction was refused too)",
                    ["side"], registry=metrics.REGISTRY)
BUDGET = Budget(30, timedelta(minutes=10))
"""The per-task command budget; `main.build` sets it from the settings (HUB_TASKS__*)."""


def configure(budget: Budget) -> None:
    global BUDGET
    BUDGET = budget

CHANGE_MODELS: dict[str, Any] = {
    "title": cmd.TitleChange, "description": cmd.DescriptionChange, "due_date": cmd.DueDateChange,
    "priority": cmd.PriorityChange, "status": cmd.StatusChange, "owner_id": cmd.OwnerChange,
}
NOTIFY_KIND = {"parent_task_closed": "subtask_update_failed", "schedule_fixed": "due_date_change_failed"}


# --- projections ------------------------------------------------------------------


@router.on("linking.integration.changed")
async def on_integration(ctx: HandlerContext, event: Event[linking.IntegrationChanged]) -> None:
    p = event.payload
    await storage.upsert_integration(ctx.conn, event.org_id, p.state == "enabled", p.portal_id, p.revision)


@router.on("linking.link.changed")
async def on_link(ctx: HandlerContext, event: Event[linking.LinkChanged]) -> None:
    p = event.payload
    await storage.upsert_link(ctx.conn, event.org_id, p.portal_id, p.project_id, p.record.record_type,
                              p.record.record_id, p.linked, p.revision)


@router.on("identity.user_access.changed")
async def on_user_access(ctx: HandlerContext, event: Event[identity.UserAccessChanged]) -> None:
    await storage.upsert_user(ctx.conn, event.org_id, event.payload)


@router.on("pm.project.upserted")
async def on_project(ctx: HandlerContext, event: Event[pm.PmProjectUpserted]) -> None:
    p = event.payload
    await storage.upsert_project(ctx.conn, event.org_id, p.id, p.portal_id, p.schedule_fixed, p.version)
    await storage.save_display_name(ctx.conn, event.org_id, "project", p.id, p.name, None, p.version)


@router.on("pm.project.deleted")
async def on_project_deleted(ctx: HandlerContext, event: Event[pm.PmProjectDeleted]) -> None:
    p = event.payload
    await storage.upsert_project(ctx.conn, event.org_id, p.id, p.portal_id, False, p.version, deleted=True)


# --- helpers -------------------------------------------------------------------------


async def enabled_for(ctx: HandlerContext, org_id: str, portal_id: str | None) -> tuple[bool, str | None]:
    """(enabled?, the enabled portal). A PM event of another portal counts as not enabled."""
    return enabled_of(await storage.integration(ctx.conn, org_id), portal_id)


def enabled_of(integ: dict[str, Any] | None, portal_id: str | None) -> tuple[bool, str | None]:
    """`enabled_for` on an integration row already read."""
    if integ is None or not integ["enabled"]:
        return False, None
    if portal_id is not None and integ["portal_id"] != portal_id:
        return False, integ["portal_id"]
    return True, integ["portal_id"]


DISABLED = ("integration_disabled", "the integration is disabled for this org (or not set up): nothing is mirrored")


async def decide(ctx: HandlerContext, *, side: str, decision: str, code: str, reason: str,
                 hub_task_id: uuid.UUID | None = None, pm_task_id: str | None = None, crm_task_id: str | None = None,
                 fields: list[str] | tuple[str, ...] = (), w: storage.Writes | None = None) -> None:
    """Record a decision (on `w` when given: buffered, sent with the handler's other writes) and publish it."""
    org = ctx.event.org_id
    await storage.record_decision(
        w or ctx.conn, org_id=org, hub_task_id=hub_task_id, pm_task_id=pm_task_id, crm_task_id=crm_task_id, side=side,
        event_id=ctx.event.event_id, event_type=ctx.event.event_type, decision=decision, reason_code=code,
        reason=reason, fields=list(fields))
    subject = str(hub_task_id) if hub_task_id else f"{side}:{pm_task_id or crm_task_id}"
    await ctx.emit(TaskMirrorDecided(hub_task_id=hub_task_id, side=side, pm_task_id=pm_task_id, crm_task_id=crm_task_id,  # type: ignore[arg-type]
                                     decision=decision, reason_code=code, reason=reason[:2000],  # type: ignore[arg-type]
                                     fields=list(fields)),  # type: ignore[arg-type]
                   entity_key=f"{org}:task:{subject}")


async def refuse(ctx: HandlerContext, *, code: str, reason: str, acting_user_id: str | None,
                 hub_task_id: uuid.UUID | None = None, crm_task_id: str | None = None, pm_task_id: str | None = None,
                 record: RecordRef | None = None, fields: list[str] | tuple[str, ...] = (), notify_kind: str | None = None,
                 title: str | None = None, w: storage.Writes | None = None) -> None:
    """A refusal: history, `tasks.request.refused` for the CRM side, and an e-mail to the acting user."""
    org = ctx.event.org_id
    await decide(ctx, side="crm", decision="refused", code=code, reason=reason, hub_task_id=hub_task_id,
                 pm_task_id=pm_task_id, crm_task_id=crm_task_id, fields=fields, w=w)
    subject = str(hub_task_id) if hub_task_id else f"crm:{crm_task_id}"
    await ctx.emit(TaskRequestRefused(hub_task_id=hub_task_id, crm_task_id=crm_task_id, pm_task_id=pm_task_id,
                                      record=record, acting_user_id=acting_user_id, reason_code=code, reason=reason,
                                      fields=list(fields)),  # type: ignore[arg-type]
                   entity_key=f"{org}:task:{subject}")
    u = await storage.user(ctx.conn, org, acting_user_id)
    if notify_kind is None or u is None:
        return
    request_id = uuid.uuid5(ctx.event.event_id, f"notify:{code}:{','.join(fields)}")
    await ctx.emit(NotificationRequested(
        request_id=request_id, kind=notify_kind, optional=False,  # type: ignore[arg-type]
        recipient=Recipient(user_id=u["crm_user_id"], email=u["email"], name=u["name"], locale=u["locale"],
                            time_zone=u["time_zone"]),
        data=await mail_data(ctx, code=code, reason=reason, title=title, record=record, hub_task_id=hub_task_id,
                             crm_task_id=crm_task_id, pm_task_id=pm_task_id, fields=fields, acting_user=u),
    ), entity_key=f"{org}:{request_id}")


async def mail_data(ctx: HandlerContext, *, code: str, reason: str, title: str | None, record: RecordRef | None,
                    hub_task_id: uuid.UUID | None, crm_task_id: str | None, pm_task_id: str | None,
                    fields: list[str] | tuple[str, ...], acting_user: dict[str, Any]) -> dict[str, Any]:
    """What the refusal e-mail says (hub_schema notifications.py): names, not ids; the reason as a code and the
    names it mentions, so the mail is worded in the reader's language; when it happened."""
    names = await storage.names_for_mail(ctx.conn, ctx.event.org_id, record_type=record.record_type if record else None,
                                         record_id=record.record_id if record else None, hub_task_id=hub_task_id,
                                         pm_task_id=pm_task_id)
    user_state = "inactive" if not acting_user["active"] else "not_allowed"
    params = {k: v for k, v in {**names, "record_type": record.record_type if record else None,
                                "user_name": acting_user["name"], "user_state": user_state}.items()
              if v is not None and k != "record_url"}
    return {"reason_code": code, "reason_params": params, "reason": reason, "crm_task_id": crm_task_id,
            "pm_task_id": pm_task_id, "task_name": title or "-", "task_id": crm_task_id or pm_task_id,
            **({"record_type": record.record_type, "record_id": record.record_id} if record else {}),
            **names, "occurred_at": ctx.event.envelope.occurred_at.isoformat(), "fields": list(fields)}


async def pm_values(ctx: HandlerContext, p: pm.PmTaskUpserted, known_owner: tuple[str | None] | None = None) -> dict[str, Any]:
    """A PM task in canonical terms; an owner with no matching CRM user is left out (never cleared).

    `known_owner` = (the owner's CRM user or None,) when already read (`storage.pm_task_context`)."""
    values: dict[str, Any] = {"title": p.title, "description": p.description,
                              "due_date": p.due_date.isoformat() if p.due_date else None,
                              "priority": p.priority, "status": p.status}
    if p.owner_id is None:
        values["owner_id"] = None
    else:
        owner = (known_owner[0] if known_owner is not None
                 else await storage.crm_user_of_portal_user(ctx.conn, ctx.event.org_id, p.owner_id))
        if owner is not None:
            values["owner_id"] = owner
    return values


def crm_values(p: crm.CrmTaskUpserted) -> dict[str, Any]:
    return {"title": p.subject, "description": p.description,
            "due_date": p.due_date.isoformat() if p.due_date else None,
            "priority": p.priority, "status": p.status, "owner_id": p.owner_id}


async def to_side(ctx: HandlerContext, side: str, values: dict[str, Any]) -> dict[str, Any]:
    """Canonical values as the target side spells them (the owner becomes a portal user for the PM tool)."""
    out = dict(values)
    if side == "pm" and out.get("owner_id") is not None:
        u = await storage.user(ctx.conn, ctx.event.org_id, out["owner_id"])
        if u is None or u["portal_user_id"] is None:
            out.pop("owner_id")
        else:
            out["owner_id"] = u["portal_user_id"]
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


def ids_of(m: dict[str, Any]) -> dict[str, Any]:
    return {"hub_task_id": m["hub_task_id"], "pm_task_id": m["pm_task_id"], "crm_task_id": m["crm_task_id"]}


async def within_budget(ctx: HandlerContext, m: dict[str, Any], origin: str, w: storage.Writes | None) -> bool:
    """Spend one command of the task's budget (on `m`: the caller saves the mapping); park the task when it is used up.

    A parked task sends nothing (each change is recorded as skipped: parked) until `resume`."""
    if m.get("parked_at") is not None:
        await decide(ctx, side=origin, decision="skipped", code="parked",
                     reason=f"the task is parked since {m['parked_at'].isoformat()} ({m.get('parked_reason')}); nothing "
                            "is sent until a real edit on either side or a resync", w=w, **ids_of(m))
        return False
    now = datetime.now(timezone.utc)
    spent = domain.spend(BUDGET, m.get("budget_window_start"), m.get("budget_used") or 0, now)
    m["budget_window_start"], m["budget_used"] = spent.window_start, spent.used
    if spent.allowed:
        return True
    window = int(BUDGET.window.total_seconds())
    reason = (f"command budget used up: {BUDGET.limit} commands within {window} s for this task; parked until a "
              "real edit on either side or a resync (a loop the other rules did not stop)")
    m["parked_at"], m["parked_reason"] = now, reason
    PARKED.inc()
    ctx.log.error("ALERT task parked: command budget used up", alert="task_parked", hub_task_id=str(m["hub_task_id"]),
                  pm_task_id=m["pm_task_id"], crm_task_id=m["crm_task_id"], budget=BUDGET.limit, window_seconds=window)
    await decide(ctx, side=origin, decision="parked", code="command_budget", reason=reason, w=w, **ids_of(m))
    return False


async def resume(ctx: HandlerContext, m: dict[str, Any], side: str, code: str, reason: str,
                 w: storage.Writes | None = None) -> None:
    """Un-park a task (a real edit or a resync) with a fresh budget; the caller saves the mapping."""
    if m.get("parked_at") is None:
        return
    m["parked_at"] = m["parked_reason"] = m["budget_window_start"] = None
    m["budget_used"] = 0
    await decide(ctx, side=side, decision="resumed", code=code, reason=reason, w=w, **ids_of(m))


async def send_update(ctx: HandlerContext, m: dict[str, Any], target: str, canon_changes: dict[str, Any],
                      source_at: dict[str, str], acting_user_id: str | None, w: storage.Writes | None = None, *,
                      cause: str = "change", reverts: uuid.UUID | None = None) -> bool:
    """Send the target side an update of `canon_changes`; False when there is nothing it can be told, or the task
    is (now) parked. Spends the task's command budget on `m`: the caller saves the mapping afterwards.

    `cause`: `change`, `correction` or `revert` (of the refused command `reverts`), see domain.take_back."""
    target_id = m["pm_task_id"] if target == "pm" else m["crm_task_id"]
    if target_id is None or not canon_changes:
        return False  # the record is still being created: the create's echo brings the diff
    side_values = await to_side(ctx, target, canon_changes)
    if not side_values:
        return False
    if not await within_budget(ctx, m, domain.other(target) if cause == "change" else target, w):
        return False
    command_id = uuid.uuid4()
    changes = change_list(side_values)
    if target == "pm":
        payload: Any = cmd.PmTaskUpdate(command_id=command_id, hub_task_id=m["hub_task_id"], portal_id=m["portal_id"],
                                        project_id=m["project_id"], task_id=target_id,
                                        base_version=m["pm_version"] or 0, changes=changes)
    else:
        payload = cmd.CrmTaskUpdate(command_id=command_id, hub_task_id=m["hub_task_id"], task_id=target_id,
                                    base_version=m["crm_version"] or 0, changes=changes)
    sent = {f: canon_changes[f] for f in side_values}
    await storage.record_command(w or ctx.conn, command_id=command_id, hub_task_id=m["hub_task_id"], org_id=ctx.event.org_id,
                                 target=target, kind=payload.EVENT_TYPE, changes=sent,
                                 source_at={f: source_at[f] for f in sent if f in source_at}, acting_user_id=acting_user_id,
                                 cause=cause, reverts_command_id=reverts)
    await ctx.emit(payload, entity_key=f"task:{target_id}")
    return True


async def mirror_pm_task_to_record(ctx: HandlerContext, snap: dict[str, Any], values: dict[str, Any], record: dict[str, Any],
                                   reason_code: str, reason: str) -> None:
    """S5: create the CRM task for a flagged PM task on one linked record."""
    org = ctx.event.org_id
    hub_task_id = uuid.uuid4()
    modified_at = snap["modified_at"].isoformat()
    state = State.initial("pm", values, modified_at)
    # The parent's mapping is read before this one is written: it is another PM task's (or, were a task its own
    # parent, this very key, whose new row has no CRM id yet), so the answer is the same either way.
    parent_crm = None
    if snap["parent_task_id"]:
        parent = await ctx.conn.fetchval(
            "SELECT crm_task_id FROM task_mappings WHERE org_id = $1 AND pm_task_id = $2 AND record_type = $3 "
            "AND record_id = $4", org, snap["parent_task_id"], record["record_type"], record["record_id"])
        parent_crm = parent
    w = storage.Writes(ctx.conn)  # mapping + command + decision: one statement
    await storage.create_mapping(w, hub_task_id=hub_task_id, org_id=org, origin="pm", portal_id=snap["portal_id"],  # type: ignore[arg-type]
                                 project_id=snap["project_id"], pm_task_id=snap["task_id"],
                                 record_type=record["record_type"], record_id=record["record_id"], crm_task_id=None,
                                 state=state.to_json(), pm_version=snap["version"], crm_version=None)
    command_id = uuid.uuid4()
    due = values.get("due_date")
    payload = cmd.CrmTaskCreate(command_id=command_id, hub_task_id=hub_task_id, record_type=record["record_type"],
                                record_id=record["record_id"], subject=values["title"], description=values["description"],
                                due_date=date.fromisoformat(due) if due else None, priority=values["priority"],
                                status=values["status"], owner_id=values.get("owner_id"), parent_task_id=parent_crm)
    await storage.record_command(w, command_id=command_id, hub_task_id=hub_task_id, org_id=org, target="crm",  # type: ignore[arg-type]
                                 kind=payload.EVENT_TYPE, changes=values, source_at={f: modified_at for f in values},
                                 acting_user_id=None)
    await ctx.emit(payload, entity_key=f"task:{hub_task_id}")
    await decide(ctx, side="pm", decision="mirrored", code=reason_code, reason=reason, hub_task_id=hub_task_id,
                 pm_task_id=snap["task_id"], fields=list(values), w=w)
    await w.flush()


async def bind_created(ctx: HandlerContext, c: dict[str, Any], side: str, task_id: str, version: int,
                       values: dict[str, Any], integ: tuple[dict[str, Any] | None] | None = None) -> None:
    """The echo of a create command: learn the new record's id; push anything agreed since.

    `integ` = (the integration row or None,) when already read; the writes go out as one statement at the end."""
    m = await storage.mapping(ctx.conn, ctx.event.org_id, c["hub_task_id"])
    assert m is not None
    state = State.from_json(m["state"])
    state.bind(side, values)
    if side == "pm":
        m["pm_task_id"], m["pm_version"] = task_id, version
    else:
        m["crm_task_id"], m["crm_version"] = task_id, version
    m["state"] = state.to_json()
    w = storage.Writes(ctx.conn)
    await storage.set_command_outcome(w, c["command_id"], "applied")  # type: ignore[arg-type]
    await decide(ctx, side=side, decision="skipped", code="echo",
                 reason=f"the {side.upper()} side created the task the hub asked for (command {c['command_id']}); not mirrored back",
                 hub_task_id=m["hub_task_id"], pm_task_id=m["pm_task_id"], crm_task_id=m["crm_task_id"], w=w)
    if integ is not None:
        enabled, _ = enabled_of(integ[0], None)
    else:
        enabled, _ = await enabled_for(ctx, ctx.event.org_id, None)
    behind = {f: v for f, v in state.canon.items() if state.seen(side).get(f, object()) != v}
    if enabled and behind:
        if await send_update(ctx, m, side, behind, {f: state.canon_at[f][0] for f in behind}, c["acting_user_id"], w):
            await decide(ctx, side=domain.other(side), decision="mirrored", code="changed",
                         reason="changes made while the task was being created", hub_task_id=m["hub_task_id"],
                         pm_task_id=m["pm_task_id"], crm_task_id=m["crm_task_id"], fields=list(behind), w=w)
    await storage.save_mapping(w, m)  # type: ignore[arg-type]
    await w.flush()


async def apply_to_mapping(ctx: HandlerContext, m: dict[str, Any], side: str, values: dict[str, Any], modified_at: str,
                           version: int, echo_cmd: dict[str, Any] | None, enabled: bool, guard: Guard,
                           acting_user_id: str | None, title: str | None) -> None:
    """Merge one change into one mapping, push the results, record every decision (writes: one statement)."""
    w = storage.Writes(ctx.conn)
    await _apply_to_mapping(ctx, m, side, values, modified_at, version, echo_cmd, enabled, guard, acting_user_id, title, w)
    await storage.save_mapping(w, m)  # type: ignore[arg-type]  # after the sends: they spend the command budget
    await w.flush()


async def _apply_to_mapping(ctx: HandlerContext, m: dict[str, Any], side: str, values: dict[str, Any], modified_at: str,
                            version: int, echo_cmd: dict[str, Any] | None, enabled: bool, guard: Guard,
                            acting_user_id: str | None, title: str | None, w: storage.Writes) -> None:
    state = State.from_json(m["state"])
    echo = Echo(echo_cmd["changes"], echo_cmd["source_at"]) if echo_cmd else None
    out = domain.apply_change(state, side, values, modified_at, echo=echo, enabled=enabled, guard=guard)
    m["state"] = state.to_json()
    m[f"{side}_version"] = version
    ids = ids_of(m)
    if echo_cmd is not None:
        await storage.set_command_outcome(w, echo_cmd["command_id"], "applied")  # type: ignore[arg-type]
    if not out.changed:
        if echo_cmd is not None:
            await decide(ctx, side=side, decision="skipped", code="echo",
                         reason=f"change caused by the hub (command {echo_cmd['command_id']}); not mirrored back", w=w, **ids)
        else:
            await decide(ctx, side=side, decision="skipped", code="no_change", reason="no mirrored field changed", w=w, **ids)
        return
    if not enabled:
        await decide(ctx, side=side, decision="skipped", code=DISABLED[0], reason=DISABLED[1], fields=out.changed, w=w, **ids)
        return
    if echo_cmd is None:
        await resume(ctx, m, side, "real_edit", f"a real edit in the {side.upper()} side resumes the parked task", w)
    target = domain.other(side)
    if out.push_other:
        await send_update(ctx, m, target, out.push_other, out.source_at, acting_user_id, w)
        if m.get("parked_at") is None:
            await decide(ctx, side=side, decision="mirrored", code="changed",
                         reason=f"changed in the {side.upper()} side; sent to the {target.upper()} side",
                         fields=list(out.push_other), w=w, **ids)
    settled = [f for f in out.changed if f not in out.push_other and f not in out.lost and f not in [r[0] for r in out.refused]]
    if settled:
        if echo_cmd is not None:
            reason = f"change caused by the hub (command {echo_cmd['command_id']}); not mirrored back"
            code = "echo"
        else:
            reason, code = "the other side already holds the same values", "already_equal"
        await decide(ctx, side=side, decision="skipped", code=code, reason=reason, fields=settled, w=w, **ids)
    if out.lost:
        await decide(ctx, side=side, decision="skipped", code="conflict_lost",
                     reason="a newer change on the other side wins (newest modified_at per field; ties go to the PM side); "
                            "the winning value is written back", fields=out.lost, w=w, **ids)
    for f, code, reason in out.refused:
        record = RecordRef(record_type=m["record_type"], record_id=m["record_id"])
        await refuse(ctx, code=code, reason=reason, acting_user_id=acting_user_id, record=record, fields=[f],
                     notify_kind=NOTIFY_KIND.get(code, "task_update_failed"), title=title, w=w, **ids)
    if out.push_self:
        await send_update(ctx, m, side, out.push_self, out.source_at, None, w, cause="correction")


# --- PM tasks ----------------------------------------------------------------------


@router.on("pm.task.upserted")
async def on_pm_task(ctx: HandlerContext, event: Event[pm.PmTaskUpserted]) -> None:
    p = event.payload
    org = event.org_id
    # Round trips: one read of everything needed (version, owner, integration, echoed command, linked records),
    # one statement saving the snapshot and locking the mappings, one with the writes of each mapping.
    pre = await storage.pm_task_context(ctx.conn, org, p.id, p.portal_id, p.project_id, p.owner_id, p.command_id)
    if pre["snap_version"] is not None and p.version <= pre["snap_version"]:
        await decide(ctx, side="pm", decision="skipped", code="stale",
                     reason=f"version {p.version} is not newer than the applied version {pre['snap_version']}", pm_task_id=p.id)
        return
    values = await pm_values(ctx, p, (pre["owner"],))
    c = pre["command"]
    if c is not None and c["kind"] == "pm.task.create":
        await storage.save_pm_task(ctx.conn, org, p, values)
        await bind_created(ctx, c, "pm", p.id, p.version, values, (pre["integration"],))
        return
    enabled, _ = enabled_of(pre["integration"], p.portal_id)
    snap, mappings = await storage.save_pm_task_lock_mappings(ctx.conn, org, p, values)
    if not mappings:
        skip = domain.pm_task_skip_reason(recurring=p.recurring, add_to_crm=p.add_to_crm)
        if skip is not None:
            await decide(ctx, side="pm", decision="skipped", code=skip[0], reason=skip[1], pm_task_id=p.id)
            return
        if not enabled:
            await decide(ctx, side="pm", decision="skipped", code=DISABLED[0], reason=DISABLED[1], pm_task_id=p.id)
            return
        records = [r for r in pre["linked_records"] if r["record_type"] in domain.MIRRORED_RECORD_TYPES]
        if not records:
            await decide(ctx, side="pm", decision="skipped", code="no_linked_record",
                         reason=f"project {p.project_id} is not linked to any contact, account or deal", pm_task_id=p.id)
            return
        for r in records:
            await mirror_pm_task_to_record(ctx, snap, values, r, "created",
                                           f"PM task created with \"add to CRM\": created on {r['record_type']} {r['record_id']}")
        return
    for m in mappings:
        if m["pm_version"] is not None and p.version <= m["pm_version"]:
            continue
        await apply_to_mapping(ctx, m, "pm", values, p.modified_at.isoformat(), p.version, c, enabled, Guard(),
                               None, p.title)


@router.on("pm.task.deleted")
async def on_pm_task_deleted(ctx: HandlerContext, event: Event[pm.PmTaskDeleted]) -> None:
    p = event.payload
    if not await storage.mark_pm_task_deleted(ctx.conn, event.org_id, p):
        return
    for m in await storage.mappings_of_pm_task(ctx.conn, event.org_id, p.id):
        await decide(ctx, side="pm", decision="skipped", code="delete_not_mirrored",
                     reason="the PM task was deleted; deletes are not mirrored", hub_task_id=m["hub_task_id"],
                     pm_task_id=p.id, crm_task_id=m["crm_task_id"])


@router.on("pm.comment.added")
async def on_pm_comment(ctx: HandlerContext, event: Event[pm.PmCommentAdded]) -> None:
    """S5: a comment on a mirrored PM task becomes a note on each linked record it was mirrored to."""
    p = event.payload
    org = event.org_id
    mappings = await storage.mappings_of_pm_task(ctx.conn, org, p.task_id)
    if not mappings:
        await decide(ctx, side="pm", decision="skipped", code="not_mirrored",
                     reason=f"comment {p.id}: the PM task {p.task_id} is not mirrored to the CRM", pm_task_id=p.task_id)
        return
    enabled, _ = await enabled_for(ctx, org, p.portal_id)
    for m in mappings:
        ids = {"hub_task_id": m["hub_task_id"], "pm_task_id": m["pm_task_id"], "crm_task_id": m["crm_task_id"]}
        if p.command_id is not None:
            await decide(ctx, side="pm", decision="skipped", code="echo", reason="comment written by the hub", **ids)
            continue
        if not enabled:
            await decide(ctx, side="pm", decision="skipped", code=DISABLED[0], reason=DISABLED[1], **ids)
            continue
        title = State.from_json(m["state"]).canon.get("title")
        command_id = uuid.uuid4()
        payload = cmd.CrmNoteAdd(command_id=command_id, hub_task_id=m["hub_task_id"], pm_comment_id=p.id,
                                 record_type=m["record_type"], record_id=m["record_id"], title=title, body=p.body,
                                 author_name=p.author_name)
        await storage.record_command(ctx.conn, command_id=command_id, hub_task_id=m["hub_task_id"], org_id=org,
                                     target="crm", kind=payload.EVENT_TYPE, changes={}, source_at={}, acting_user_id=None)
        await ctx.emit(payload, entity_key=f"{m['record_type']}:{m['record_id']}")
        await decide(ctx, side="pm", decision="mirrored", code="comment_to_note",
                     reason=f"comment {p.id} added as a note on {m['record_type']} {m['record_id']}", **ids)


# --- CRM tasks -----------------------------------------------------------------------


@router.on("crm.task.upserted")
async def on_crm_task(ctx: HandlerContext, event: Event[crm.CrmTaskUpserted]) -> None:
    p = event.payload
    org = event.org_id
    # Round trips: one read (version, integration, echoed command), one statement saving the snapshot, locking
    # the mapping and reading the S10/S11 guard's rows, one with the mapping's writes.
    pre = await storage.crm_task_context(ctx.conn, org, p.id, p.command_id)
    if pre["snap_version"] is not None and p.version <= pre["snap_version"]:
        await decide(ctx, side="crm", decision="skipped", code="stale",
                     reason=f"version {p.version} is not newer than the applied version {pre['snap_version']}", crm_task_id=p.id)
        return
    values = crm_values(p)
    acting = p.acting_user_id or p.created_by
    c = pre["command"]
    if c is not None and c["kind"] == "crm.task.create":
        await storage.save_crm_task(ctx.conn, org, p.id, p.record_type, p.record_id, p.version)
        await bind_created(ctx, c, "crm", p.id, p.version, values, (pre["integration"],))
        return
    enabled, portal_id = enabled_of(pre["integration"], None)
    m, g = await storage.save_crm_task_lock_mapping(ctx.conn, org, p.id, p.record_type, p.record_id, p.version)
    if m is not None:
        guard = Guard()
        if m["pm_task_id"] is not None and g["pm_parent_task_id"]:
            guard = Guard(parent_closed=bool(g["parent_exists"]) and g["parent_status"] == "closed" and not g["parent_deleted"],
                          parent_task_id=g["pm_parent_task_id"])
        guard = Guard(parent_closed=guard.parent_closed, parent_task_id=guard.parent_task_id,
                      schedule_fixed=bool(g["schedule_fixed"]))
        await apply_to_mapping(ctx, m, "crm", values, p.modified_at.isoformat(), p.version, c, enabled, guard,
                               acting, p.subject)
        return
    if not p.add_to_pm:
        await decide(ctx, side="crm", decision="skipped", code="not_flagged",
                     reason="the CRM task was not saved with \"add to the PM tool\"", crm_task_id=p.id)
        return
    if not enabled or portal_id is None:
        await decide(ctx, side="crm", decision="skipped", code=DISABLED[0], reason=DISABLED[1], crm_task_id=p.id)
        return
    record = RecordRef(record_type=p.record_type, record_id=p.record_id)
    linked = [domain.LinkedProject(r["portal_id"], r["project_id"])
              for r in await storage.linked_projects(ctx.conn, org, portal_id, p.record_type, p.record_id)]
    choice = domain.choose_project(p.record_type, p.record_id, linked, p.pm_project_id)
    if isinstance(choice, tuple):
        await refuse(ctx, code=choice[0], reason=choice[1], acting_user_id=acting, crm_task_id=p.id, record=record,
                     notify_kind="task_create_refused", title=p.subject)
        return
    denied = domain.may_add_task(await storage.user(ctx.conn, org, acting))
    if denied is not None:
        await refuse(ctx, code=denied[0], reason=denied[1], acting_user_id=acting, crm_task_id=p.id, record=record,
                     notify_kind="task_create_refused", title=p.subject)
        return
    hub_task_id = uuid.uuid4()
    modified_at = p.modified_at.isoformat()
    state = State.initial("crm", values, modified_at)
    await storage.create_mapping(ctx.conn, hub_task_id=hub_task_id, org_id=org, origin="crm", portal_id=choice.portal_id,
                                 project_id=choice.project_id, pm_task_id=None, record_type=p.record_type,
                                 record_id=p.record_id, crm_task_id=p.id, state=state.to_json(), pm_version=None,
                                 crm_version=p.version)
    parent_pm = None
    if p.parent_task_id:
        parent = await storage.mapping_of_crm_task(ctx.conn, org, p.parent_task_id)
        parent_pm = parent["pm_task_id"] if parent else None
    side_values = await to_side(ctx, "pm", values)
    command_id = uuid.uuid4()
    payload = cmd.PmTaskCreate(command_id=command_id, hub_task_id=hub_task_id, portal_id=choice.portal_id,
                               project_id=choice.project_id, title=p.subject, description=p.description,
                               due_date=p.due_date, priority=p.priority, status=p.status,
                               owner_id=side_values.get("owner_id"), parent_task_id=parent_pm)
    await storage.record_command(ctx.conn, command_id=command_id, hub_task_id=hub_task_id, org_id=org, target="pm",
                                 kind=payload.EVENT_TYPE, changes=values, source_at={f: modified_at for f in values},
                                 acting_user_id=acting)
    await ctx.emit(payload, entity_key=f"task:{hub_task_id}")
    await decide(ctx, side="crm", decision="mirrored", code="created",
                 reason=f"CRM task added to project {choice.project_id}", hub_task_id=hub_task_id, crm_task_id=p.id,
                 fields=list(values))


@router.on("crm.task.deleted")
async def on_crm_task_deleted(ctx: HandlerContext, event: Event[crm.CrmTaskDeleted]) -> None:
    p = event.payload
    snap = await storage.crm_task(ctx.conn, event.org_id, p.id)
    if snap is not None and p.version <= snap["version"]:
        return
    await storage.save_crm_task(ctx.conn, event.org_id, p.id, None, None, p.version, deleted=True)
    m = await storage.mapping_of_crm_task(ctx.conn, event.org_id, p.id)
    if m is not None:
        await decide(ctx, side="crm", decision="skipped", code="delete_not_mirrored",
                     reason="the CRM task was deleted; deletes are not mirrored", hub_task_id=m["hub_task_id"],
                     pm_task_id=m["pm_task_id"], crm_task_id=p.id)


# --- upstream refusals ------------------------------------------------------------------


@router.on("pm.command.rejected", "crm.command.rejected")
async def on_command_rejected(ctx: HandlerContext, event: Event[Any]) -> None:
    """An upstream refused one of our commands: the refused values are taken back, the other side reverted.

    A refused revert or correction ends the exchange: one `conflict` in the history, nothing sent, no e-mail
    (the person who made the change was told when the change itself was refused)."""
    p = event.payload
    c = await storage.command(ctx.conn, ctx.event.org_id, p.command_id)
    if c is None:
        return  # another service's command
    await storage.set_command_outcome(ctx.conn, c["command_id"], f"rejected:{p.reason_code}")
    m = await storage.mapping(ctx.conn, ctx.event.org_id, c["hub_task_id"])
    assert m is not None
    target = c["target"]
    source = domain.other(target)
    ids = ids_of(m)
    fields = [f for f in domain.FIELDS if f in c["changes"]]
    state = State.from_json(m["state"])
    cause = c.get("cause") or "change"
    if cause in domain.FOLLOW_UPS:
        await both_refused(ctx, m, c, state, p.reason_code, p.reason)
        return
    revert: dict[str, Any] = {}
    if c["kind"].endswith(".update"):
        revert = domain.take_back(state, target, c["changes"], cause=cause,
                                  occurred_at=event.envelope.occurred_at.isoformat()).revert
        m["state"] = state.to_json()
    reason = f"the {target.upper()} side refused the change: {p.reason}"
    if source == "crm":
        record = RecordRef(record_type=m["record_type"], record_id=m["record_id"])
        await refuse(ctx, code=p.reason_code, reason=reason, acting_user_id=c["acting_user_id"], record=record,
                     fields=fields, notify_kind=NOTIFY_KIND.get(p.reason_code, "task_update_failed"),
                     title=state.canon.get("title"), **ids)
    else:
        await decide(ctx, side=source, decision="refused", code=p.reason_code, reason=reason, fields=fields, **ids)
    if revert:
        await send_update(ctx, m, source, revert, {f: state.canon_at[f][0] for f in revert}, None,
                          cause="revert", reverts=c["command_id"])
    if c["kind"].endswith(".update"):
        await storage.save_mapping(ctx.conn, m)


async def both_refused(ctx: HandlerContext, m: dict[str, Any], c: dict[str, Any], state: State, code: str,
                       why: str) -> None:
    """The `target` side refused a revert or correction: the other side had already refused (or lost) the change.

    A `version_conflict` is no refusal of the values: the record changed after the command's base version, and
    that change (ordered before this rejection on the record's key) is already merged here; what is still agreed
    and missing on the target is sent once more against the newest version. That repeats only if the record
    changes again in between (and the command budget bounds even that)."""
    target = c["target"]
    ids = ids_of(m)
    tb = domain.take_back(state, target, c["changes"], cause=c["cause"], occurred_at="", code=code)
    conflict, again = tb.conflict, tb.retry
    what = "the revert of a change the other side refused" if c["cause"] == "revert" else \
        "the correction of a change the hub could not carry over"
    if again:
        if await send_update(ctx, m, target, again, {f: state.canon_at[f][0] for f in again}, c["acting_user_id"],
                             cause=c["cause"], reverts=c.get("reverts_command_id")):
            await decide(ctx, side=target, decision="skipped", code="retried",
                         reason=f"the {target.upper()} side's task changed after {what} was sent ({why}); sent again "
                                "against its newest version", fields=list(again), **ids)
        await storage.save_mapping(ctx.conn, m)
        return
    if not conflict:
        await decide(ctx, side=target, decision="skipped", code="superseded",
                     reason=f"the {target.upper()} side refused {what} ({why}), which a newer change has made moot",
                     fields=[f for f in domain.FIELDS if f in c["changes"]], **ids)
        return
    CONFLICTS.labels(target).inc()
    ctx.log.warning("both sides refused a change: conflict recorded, nothing more sent", hub_task_id=str(ids["hub_task_id"]),
                    command_id=str(c["command_id"]), reverts_command_id=str(c.get("reverts_command_id")), reason_code=code)
    await decide(ctx, side=target, decision="conflict", code=code,
                 reason=f"both sides refused: the {target.upper()} side refused {what} ({why}); the sides differ in "
                        f"{', '.join(conflict)} and the hub sends nothing more for this change, until the next real "
                        "edit on either side", fields=conflict, **ids)


# --- S7 resync ---------------------------------------------------------------------------


@router.on("linking.resync.requested")
async def on_resync(ctx: HandlerContext, event: Event[linking.ResyncRequested]) -> None:
    """S7: reconcile every mapped task (winner per field by the conflict policy), mirror what was missed."""
    p = event.payload
    org = event.org_id
    enabled, _ = await enabled_for(ctx, org, p.portal_id)
    if not enabled:
        ctx.log.warning("resync requested while the integration is not enabled for the portal; ignored", portal_id=p.portal_id)
        return
    for m in await storage.mappings_of_org(ctx.conn, org, p.portal_id):
        state = State.from_json(m["state"])
        to_pm, to_crm = domain.reconcile(state)
        m["state"] = state.to_json()
        ids = ids_of(m)
        await resume(ctx, m, "crm", "resync", "an administrator's resync resumes the parked task")
        for target, changes in (("crm", to_crm), ("pm", to_pm)):
            if changes and await send_update(ctx, m, target, changes, {f: state.canon_at[f][0] for f in changes},
                                             p.requested_by):
                await decide(ctx, side=domain.other(target), decision="mirrored", code="resync",
                             reason=f"resync: the {domain.other(target).upper()} side's newer values sent to the "
                                    f"{target.upper()} side", fields=list(changes), **ids)
        await storage.save_mapping(ctx.conn, m)
    for snap in await storage.flagged_pm_tasks(ctx.conn, org, p.portal_id):
        records = [r for r in await storage.linked_records(ctx.conn, org, p.portal_id, snap["project_id"])
                   if r["record_type"] in domain.MIRRORED_RECORD_TYPES]
        mapped = {(m["record_type"], m["record_id"]) for m in await storage.mappings_of_pm_task(ctx.conn, org, snap["task_id"])}
        for r in records:
            if (r["record_type"], r["record_id"]) not in mapped:
                await mirror_pm_task_to_record(ctx, snap, dict(snap["fields"]), r, "resync",
                                               f"resync: PM task not yet mirrored, created on {r['record_type']} {r['record_id']}")


# --- names the e-mails use ------------------------------------------------------------------


@router.on("crm.account.upserted", "crm.deal.upserted")
async def on_named_record(ctx: HandlerContext, event: Event[Any]) -> None:
    """Records by name (and link) in refusal e-mails, never by id."""
    p = event.payload
    record_type = event.event_type.split(".")[1]
    await storage.save_display_name(ctx.conn, event.org_id, record_type, p.id, p.name, p.url, p.version)


@router.on("crm.contact.upserted", "crm.lead.upserted")
async def on_named_person(ctx: HandlerContext, event: Event[Any]) -> None:
    p = event.payload
    record_type = event.event_type.split(".")[1]
    name = " ".join(n for n in (p.first_name, p.last_name) if n)
    await storage.save_display_name(ctx.conn, event.org_id, record_type, p.id, name, p.url, p.version)
