"""Pure rules of task mirroring: which tasks mirror, how a change merges, who wins a conflict.

No I/O here, so every rule is unit-tested on its own (tests/test_domain.py).

State of one mapping (one PM task ↔ one CRM task), all values in *canonical
terms* (dates as ISO strings, the owner as a CRM user id):
- `canon` / `canon_at`: the agreed value of each field and the stamp that set it;
- `pm_seen` / `pm_at`, `crm_seen` / `crm_at`: what each side last showed, and
  when that value was set there (its upstream `modified_at`).

Conflict policy (deterministic): per field, the change with the newer upstream
`modified_at` wins; on a tie the PM tool wins (it owns the project plan). A
change that loses is overwritten on its own side, so both sides converge.

Loop prevention: an incoming value equal to the agreed one changes nothing
(content equal = echo). An echo of a hub command (its `command_id` is ours)
carries, for the fields the command set, the *original* change's stamp, not
the time the upstream applied it; so a late echo of an outdated command can
never beat a newer change.

Refusals (issue 14): when an upstream refuses a hub update, the refused values are
taken back and the side the change came from is put back (a `revert`); the
side of a change that lost a conflict or broke an S10/S11 rule is put back too
(a `correction`). A revert or correction that is itself refused is a refusal
answered by a refusal: the hub records `conflict` and sends nothing more for
that change (`take_back`); the fields it left apart are kept (`State.apart`)
and the next real edit on either side sends them along (`heal`). So one upstream change causes **at most
MAX_COMMANDS_PER_CHANGE = 3 commands**: the update of the other side, the
correction of its own side, and the revert after the other side refused the
update (a revert or correction refused only for a stale base version is sent
again, which needs a newer change of that record in between each time). The
per-task command budget (`spend`) bounds whatever else might loop:
a task over budget is parked until a real edit (not an echo) or a resync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

FIELDS: tuple[str, ...] = ("title", "description", "due_date", "priority", "status", "owner_id")
RANK = {"crm": 0, "pm": 1}  # tie-break: PM wins
MIRRORED_RECORD_TYPES = ("account", "contact", "deal")

Values = dict[str, Any]
Stamp = list[str]  # [iso modified_at, side]


def other(side: str) -> str:
    return "crm" if side == "pm" else "pm"


def _utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).replace(tzinfo=None)


def beats(a: Stamp, b: Stamp | None) -> bool:
    """Does change stamp `a` win over `b`? Newer modified_at wins; a tie goes to the PM side."""
    if b is None:
        return True
    return (_utc(a[0]), RANK[a[1]]) > (_utc(b[0]), RANK[b[1]])


# --- what mirrors at all ------------------------------------------------------


def pm_task_skip_reason(*, recurring: bool, add_to_crm: bool) -> tuple[str, str] | None:
    """S5: only tasks created with "add to CRM" mirror, recurring tasks never."""
    if recurring:
        return "recurring", "recurring PM tasks are never mirrored to the CRM"
    if not add_to_crm:
        return "not_flagged", "the PM task was not created with \"add to CRM\""
    return None


@dataclass(frozen=True)
class LinkedProject:
    portal_id: str
    project_id: str


MAX_MIRRORED_RECORDS = 20
"""The most linked records (contacts, accounts, deals) one PM task is copied to (HUB_TASKS__MAX_MIRRORED_RECORDS)."""


def too_many_records(count: int, limit: int, project_id: str) -> tuple[str, str] | None:
    """A PM task goes to every record linked to its project, one CRM task each, and each of its changes and
    comments after that too: past `limit` records the task is not mirrored at all (a partial copy would look
    complete on the records that got it), and the person is told. Without a bound one edit became hundreds of
    commands (the fault suite's 363 deals on one project drowned the relay in 790,000 rows)."""
    if count <= limit:
        return None
    return ("too_many_linked_records",
            f"project {project_id} is linked to {count} contacts, accounts and deals; a PM task is mirrored to at most "
            f"{limit}, so this one is not mirrored (unlink records, or raise HUB_TASKS__MAX_MIRRORED_RECORDS)")


def choose_project(record_type: str, record_id: str, linked: list[LinkedProject], chosen: str | None) -> LinkedProject | tuple[str, str]:
    """S12: the project a CRM task goes to, or (reason_code, reason) for a refusal."""
    if record_type not in MIRRORED_RECORD_TYPES:
        return "unsupported_record_type", f"tasks on a {record_type} cannot be added to the PM tool (only contacts, accounts and deals)"
    if not linked:
        return "no_linked_project", f"the {record_type} {record_id} has no linked project in the PM tool"
    if chosen is not None:
        for p in linked:
            if p.project_id == chosen:
                return p
        return "project_not_linked", f"project {chosen} is not linked to the {record_type} {record_id}"
    if len(linked) > 1:
        ids = ", ".join(sorted(p.project_id for p in linked))
        return "ambiguous_project", f"the {record_type} {record_id} is linked to several projects ({ids}); choose one"
    return linked[0]


class Actor(Protocol):
    """The acting CRM user as the S12 rule sees it (`records.User`)."""

    crm_user_id: str
    active: bool
    permissions: list[str]


def may_add_task(user: Actor | None) -> tuple[str, str] | None:
    """S12: only active CRM users whose PM permissions include add_task may create PM tasks."""
    if user is None:
        return "permission_denied", "the acting user is not known to the integration and may not add tasks in the PM tool"
    if not user.active:
        return "permission_denied", f"the CRM user {user.crm_user_id} is inactive"
    if "add_task" not in user.permissions:
        return "permission_denied", f"the CRM user {user.crm_user_id} is not allowed to add tasks in the PM tool"
    return None


# --- merging one change -------------------------------------------------------


@dataclass
class State:
    canon: Values = field(default_factory=dict)
    canon_at: dict[str, Stamp] = field(default_factory=dict)
    pm_seen: Values = field(default_factory=dict)
    pm_at: dict[str, Stamp] = field(default_factory=dict)
    crm_seen: Values = field(default_factory=dict)
    crm_at: dict[str, Stamp] = field(default_factory=dict)
    apart: list[str] = field(default_factory=list)  # fields a conflict left different: the next real edit heals them

    def seen(self, side: str) -> Values:
        return self.pm_seen if side == "pm" else self.crm_seen

    def at(self, side: str) -> dict[str, Stamp]:
        return self.pm_at if side == "pm" else self.crm_at

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"canon": self.canon, "canon_at": self.canon_at, "pm_seen": self.pm_seen,
                               "pm_at": self.pm_at, "crm_seen": self.crm_seen, "crm_at": self.crm_at}
        if self.apart:
            out["apart"] = self.apart
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(**{k: dict(data.get(k) or {}) for k in ("canon", "canon_at", "pm_seen", "pm_at", "crm_seen", "crm_at")},
                   apart=list(data.get("apart") or ()))

    @classmethod
    def initial(cls, side: str, values: Values, modified_at: str) -> State:
        """A new mapping: the origin side's values are the agreed ones."""
        st = cls()
        for f, v in values.items():
            stamp = [modified_at, side]
            st.canon[f] = v
            st.canon_at[f] = stamp
            st.seen(side)[f] = v
            st.at(side)[f] = stamp
        return st

    def bind(self, side: str, values: Values) -> None:
        """The echo of a create command: what the new record holds, without treating it as a change."""
        for f, v in values.items():
            self.seen(side)[f] = v
            self.at(side)[f] = list(self.canon_at.get(f) or ["1970-01-01T00:00:00+00:00", side])


@dataclass(frozen=True)
class Echo:
    """The hub command a change applied: what it set and the stamps of the changes it carried."""

    changes: Values
    source_at: dict[str, str]


@dataclass(frozen=True)
class Guard:
    """Facts for the refusal rules of CRM-side changes (S10, S11)."""

    parent_closed: bool = False
    parent_task_id: str | None = None
    schedule_fixed: bool = False


@dataclass
class Outcome:
    changed: list[str] = field(default_factory=list)  # fields the side really changed
    accepted: list[str] = field(default_factory=list)  # became the agreed value
    lost: list[str] = field(default_factory=list)  # older than the agreed value (conflict policy)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (field, reason_code, reason)
    push_other: Values = field(default_factory=dict)
    push_self: Values = field(default_factory=dict)
    healed: list[str] = field(default_factory=list)  # fields a conflict had left apart, sent again (in a push)
    source_at: dict[str, str] = field(default_factory=dict)


def refusal(side: str, f: str, v: Any, canon: Values, guard: Guard) -> tuple[str, str] | None:
    if side != "crm":
        return None
    if f == "status" and v == "open" and canon.get("status") == "closed" and guard.parent_closed:
        return "parent_task_closed", (
            f"the subtask cannot be reopened: its parent task {guard.parent_task_id} is closed in the PM tool")
    if f == "due_date" and guard.schedule_fixed and v != canon.get("due_date"):
        return "schedule_fixed", "the due date cannot be changed: the project has a fixed schedule in the PM tool"
    return None


def apply_change(state: State, side: str, values: Values, modified_at: str, *, echo: Echo | None = None,
                 enabled: bool = True, guard: Guard = Guard()) -> Outcome:
    """Merge one upstream change from `side` into the mapping's state; say what to push where."""
    out = Outcome()
    seen, at = state.seen(side), state.at(side)
    for f in FIELDS:
        if f not in values:
            continue
        v = values[f]
        if f in seen and seen[f] == v:
            continue  # this side did not change the field
        ts = echo.source_at[f] if echo is not None and f in echo.changes and echo.changes[f] == v and f in echo.source_at else modified_at
        stamp = [ts, side]
        seen[f] = v
        at[f] = stamp
        out.changed.append(f)
        if not enabled:
            continue
        if f in state.canon and state.canon[f] == v:
            continue  # content already equal: an echo, or both sides made the same edit
        if not beats(stamp, state.canon_at.get(f)):
            out.lost.append(f)
            continue
        refused = refusal(side, f, v, state.canon, guard)
        if refused is not None:
            out.refused.append((f, *refused))
            continue
        state.canon[f] = v
        state.canon_at[f] = stamp
        out.accepted.append(f)
    if not enabled:
        return out
    other_seen = state.seen(other(side))
    for f in out.accepted:
        if other_seen.get(f, object()) != state.canon[f]:
            out.push_other[f] = state.canon[f]
    for f in out.lost + [r[0] for r in out.refused]:
        if f in state.canon and seen.get(f) != state.canon[f]:
            out.push_self[f] = state.canon[f]
    if out.changed and echo is None:
        heal(state, side, out)
    out.source_at = {f: state.canon_at[f][0] for f in {**out.push_other, **out.push_self}}
    return out


def heal(state: State, side: str, out: Outcome) -> None:
    """A real edit on either side ends the conflicts before it: each field a conflict left apart (and this edit
    did not touch) is sent, as agreed, to whichever side still differs, together with the edit's own push.
    Without this the sides stayed apart for good in a field nobody edited again (the edit that "resumes" the
    pair sets the same value on the side that already holds it, which is no change there)."""
    seen, other_seen = state.seen(side), state.seen(other(side))
    for f in state.apart:
        if f in out.changed or f not in state.canon:
            continue  # merged like any change (or nothing agreed to heal towards)
        if f in other_seen and other_seen[f] != state.canon[f] and f not in out.push_other:
            out.push_other[f] = state.canon[f]
            out.healed.append(f)
        if f in seen and seen[f] != state.canon[f] and f not in out.push_self:
            out.push_self[f] = state.canon[f]
            out.healed.append(f)
    state.apart = []


def reconcile(state: State) -> tuple[Values, Values]:
    """S7 resync: per field where the sides differ, the winner by the conflict policy becomes agreed.

    Returns (changes for the PM side, changes for the CRM side).
    """
    to_pm: Values = {}
    to_crm: Values = {}
    for f in FIELDS:
        if f not in state.pm_seen or f not in state.crm_seen:
            continue
        pv, cv = state.pm_seen[f], state.crm_seen[f]
        pa, ca = state.pm_at.get(f), state.crm_at.get(f)
        if pv == cv:
            state.canon[f] = pv
            state.canon_at[f] = pa if pa is not None and beats(pa, ca) else (ca or pa)  # type: ignore[assignment]
            continue
        if pa is not None and beats(pa, ca):
            state.canon[f], state.canon_at[f] = pv, pa
            to_crm[f] = pv
        else:
            state.canon[f], state.canon_at[f] = cv, ca  # type: ignore[assignment]
            to_pm[f] = cv
    state.apart = []
    return to_pm, to_crm


# --- refusals answered by refusals, and the command budget (issue 14) -------------------

MAX_COMMANDS_PER_CHANGE = 3
"""One upstream change: the update of the other side + the correction of its own side + one revert."""

FOLLOW_UPS = ("correction", "revert")
"""Causes of commands that answer a change (or a refusal) rather than carry one: refused, they end the exchange."""

STALE_BASE = "version_conflict"
"""A refusal of the command's base version, not of its values: the record changed after it was sent."""


@dataclass
class TakeBack:
    """What the refusal of one hub update means for the mapping."""

    revert: Values = field(default_factory=dict)  # put the source side back to these (agreed) values
    conflict: list[str] = field(default_factory=list)  # both sides refused: nothing more is sent for these
    retry: Values = field(default_factory=dict)  # a follow-up refused for a stale base: send these again


def take_back(state: State, target: str, changes: Values, *, cause: str, occurred_at: str,
              code: str = "other") -> TakeBack:
    """`target` refused (`code`) the hub's update `changes` (canonical values), sent for `cause`.

    A refused change: the target's value becomes the agreed one again and the source side is reverted.
    A refused correction or revert: the source already refused (or lost) the value the target holds, so
    both sides said no; the fields the command was still meant to set (the agreed value, which the
    target does not hold) are a conflict, and nothing is sent. The agreed value stays as it was.
    Except for a stale base (`version_conflict`): the target's newer change is already merged (it comes
    before the rejection on the record's key), so what is still agreed and missing is sent again to the
    same side (`retry`); that can only repeat when the target's record changes again in between.
    """
    out = TakeBack()
    source = other(target)
    seen_t, seen_s = state.seen(target), state.seen(source)
    for f in FIELDS:
        if f not in changes or f not in seen_t:
            continue
        if cause in FOLLOW_UPS:
            if state.canon.get(f, object()) == changes[f] and seen_t[f] != changes[f]:
                out.conflict.append(f)
            continue
        state.canon[f] = seen_t[f]
        state.canon_at[f] = state.at(target).get(f) or [occurred_at, target]
        if seen_s.get(f, object()) != state.canon[f]:
            out.revert[f] = state.canon[f]
    if out.conflict and code == STALE_BASE:
        out.retry = {f: state.canon[f] for f in out.conflict}
        out.conflict = []
    state.apart = sorted(set(state.apart) | set(out.conflict))
    return out


@dataclass(frozen=True)
class Budget:
    """At most `limit` commands for one task within `window` (a fixed window opened by its first command)."""

    limit: int
    window: timedelta


@dataclass(frozen=True)
class Spent:
    window_start: datetime | None
    used: int
    allowed: bool


def spend(budget: Budget, window_start: datetime | None, used: int, now: datetime) -> Spent:
    """Count one more command against the task's budget; `allowed` is False once the budget is used up."""
    if window_start is None or now - window_start >= budget.window or now < window_start:
        window_start, used = now, 0
    if used >= budget.limit:
        return Spent(window_start, used, False)
    return Spent(window_start, used + 1, True)
