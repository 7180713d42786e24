"""Property tests of the task-mirroring conflict policy (hub_tasks.domain).

`beats` must be a strict total order on change stamps (deterministic and symmetric: for two
different stamps exactly one wins, whichever side asks), `apply_change` must be deterministic,
and a simulated pair of upstreams that exchange the pushes the hub asks for must converge to the
same values on both sides whatever the interleaving of deliveries (each side's own events stay
in order, as they do on one Kafka partition).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub_tasks import domain

T0 = datetime(2024, 4, 1, tzinfo=timezone.utc)


def iso(minute: int, tz_hours: int = 0) -> str:
    return (T0 + timedelta(minutes=minute)).astimezone(timezone(timedelta(hours=tz_hours))).isoformat()


stamps = st.builds(lambda m, tz, side: [iso(m, tz), side], st.integers(0, 50), st.sampled_from([0, 9, -5]),
                   st.sampled_from(["crm", "pm"]))


def key(s: list[str]) -> tuple[datetime, str]:
    return datetime.fromisoformat(s[0]), s[1]


@given(stamps, stamps)
def test_beats_is_antisymmetric_and_total(a: list[str], b: list[str]) -> None:
    if key(a) == key(b):
        assert not domain.beats(a, b) and not domain.beats(b, a)
    else:
        assert domain.beats(a, b) != domain.beats(b, a)
    assert domain.beats(a, None)


@given(stamps, stamps, stamps)
def test_beats_is_transitive(a: list[str], b: list[str], c: list[str]) -> None:
    if domain.beats(a, b) and domain.beats(b, c):
        assert domain.beats(a, c)


@given(st.integers(0, 50), st.sampled_from([0, 9, -5]), st.sampled_from([0, 9, -5]))
def test_a_tie_goes_to_the_pm_side_in_any_time_zone(m: int, tz1: int, tz2: int) -> None:
    assert domain.beats([iso(m, tz1), "pm"], [iso(m, tz2), "crm"])
    assert not domain.beats([iso(m, tz1), "crm"], [iso(m, tz2), "pm"])


values = {"title": ("a", "b", "c"), "status": ("open", "closed"), "priority": ("low", "high")}
steps = st.lists(st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(["crm", "pm"]), st.sampled_from(sorted(values)), st.sampled_from(["a", "b", "c", "open", "closed", "low", "high"])),
    st.tuples(st.just("deliver"), st.sampled_from(["crm", "pm"]), st.just(""), st.just("")),
), max_size=25)


class World:
    """Two upstreams, their change feeds (one FIFO per side) and the hub's state of one mapping."""

    def __init__(self) -> None:
        self.clock = 1
        start = {"title": "a", "status": "open", "priority": "low"}
        self.actual = {"pm": dict(start), "crm": dict(start)}
        self.state = domain.State.initial("pm", dict(start), iso(0))
        self.state.bind("crm", dict(start))
        self.feed: dict[str, list[tuple[dict, str, domain.Echo | None]]] = {"pm": [], "crm": []}

    def tick(self) -> str:
        self.clock += 1
        return iso(self.clock)

    def edit(self, side: str, f: str, v: str) -> None:
        if self.actual[side].get(f) == v:
            return
        self.actual[side][f] = v
        self.feed[side].append((dict(self.actual[side]), self.tick(), None))

    def write(self, side: str, changes: dict, source_at: dict) -> None:
        """The hub's command applied upstream: a change event echoing the command."""
        self.actual[side].update(changes)
        self.feed[side].append((dict(self.actual[side]), self.tick(), domain.Echo(dict(changes), dict(source_at))))

    def deliver(self, side: str) -> bool:
        if not self.feed[side]:
            return False
        vals, at, echo = self.feed[side].pop(0)
        before = copy.deepcopy(self.state)
        out = domain.apply_change(self.state, side, vals, at, echo=echo)
        again = domain.apply_change(before, side, vals, at, echo=echo)
        assert (out, before.to_json()) == (again, self.state.to_json()), "apply_change must be deterministic"
        if out.push_other:
            self.write(domain.other(side), out.push_other, out.source_at)
        if out.push_self:
            self.write(side, out.push_self, out.source_at)
        return True


@settings(max_examples=300, deadline=None)
@given(steps)
def test_both_sides_converge_whatever_the_interleaving(plan: list) -> None:
    w = World()
    for kind, side, f, v in plan:
        if kind == "edit":
            if v in values[f]:
                w.edit(side, f, v)
        else:
            w.deliver(side)
    for _ in range(200):  # drain: no ping-pong between the sides
        if not (w.deliver("pm") | w.deliver("crm")):
            break
    else:
        raise AssertionError(f"the sides never stopped exchanging changes: {w.state.to_json()}")
    assert w.actual["pm"] == w.actual["crm"], (w.actual, w.state.to_json())
    assert all(w.state.canon[f] == w.actual["pm"][f] for f in w.actual["pm"])


# --- issue 14: sides that refuse -----------------------------------------------------------


class RefusingWorld(World):
    """`World` where every hub command waits for the side's answer (accept or refuse), as the handlers do it.

    A command refused is taken back (`domain.take_back`): a refused change reverts the source side, a refused
    revert or correction is a conflict and ends the exchange. Every command is counted against the upstream
    change that started it (an echo carries the command's change along)."""

    def __init__(self, answers: list[bool], guarded: bool) -> None:
        super().__init__()
        self.answers = iter(answers)
        self.guard = domain.Guard(parent_closed=True, parent_task_id="parent") if guarded else domain.Guard()
        self.inbox: dict[str, list[tuple[dict, dict, str, int]]] = {"pm": [], "crm": []}  # commands waiting
        self.feed_roots: dict[str, list[int]] = {"pm": [], "crm": []}
        self.per_change: dict[int, int] = {}
        self.changes = 0
        self.conflicts = 0

    def edit(self, side: str, f: str, v: str) -> None:
        if self.actual[side].get(f) == v:
            return
        self.changes += 1
        self.feed_roots[side].append(self.changes)
        super().edit(side, f, v)

    def send(self, target: str, changes: dict, source_at: dict, cause: str, root: int) -> None:
        self.per_change[root] = self.per_change.get(root, 0) + 1
        self.inbox[target].append((dict(changes), dict(source_at), cause, root))

    def deliver(self, side: str) -> bool:
        if not self.feed[side]:
            return False
        vals, at, echo = self.feed[side].pop(0)
        root = self.feed_roots[side].pop(0)
        out = domain.apply_change(self.state, side, vals, at, echo=echo, guard=self.guard if side == "crm" else domain.Guard())
        if out.push_other:
            self.send(domain.other(side), out.push_other, out.source_at, "change", root)
        if out.push_self:
            self.send(side, out.push_self, out.source_at, "correction", root)
        return True

    def answer(self, side: str) -> bool:
        if not self.inbox[side]:
            return False
        changes, source_at, cause, root = self.inbox[side].pop(0)
        if next(self.answers, False):  # once the answers run out, both sides refuse everything
            self.actual[side].update(changes)
            self.feed[side].append((dict(self.actual[side]), self.tick(), domain.Echo(changes, source_at)))
            self.feed_roots[side].append(root)
            return True
        tb = domain.take_back(self.state, side, changes, cause=cause, occurred_at=iso(self.clock))
        self.conflicts += bool(tb.conflict)
        if tb.revert and cause not in domain.FOLLOW_UPS:
            self.send(domain.other(side), tb.revert, {f: self.state.canon_at[f][0] for f in tb.revert}, "revert", root)
        return True


BOUND = domain.MAX_COMMANDS_PER_CHANGE


@settings(max_examples=400, deadline=None)
@given(steps, st.lists(st.booleans(), max_size=40), st.booleans(), st.randoms(use_true_random=False))
def test_commands_per_change_are_bounded_whatever_the_sides_answer(plan: list, answers: list[bool],
                                                                   guarded: bool, rnd: Any) -> None:
    w = RefusingWorld(answers, guarded)
    for kind, side, f, v in plan:
        if kind == "edit":
            if v in values[f]:
                w.edit(side, f, v)
        else:
            rnd.choice([w.deliver, w.answer])(side)
    for _ in range(1000):  # drain in a random order: it must come to rest
        moves = [fn for fn in (lambda: w.deliver("pm"), lambda: w.deliver("crm"), lambda: w.answer("pm"),
                               lambda: w.answer("crm"))]
        rnd.shuffle(moves)
        if not any(m() for m in moves):
            break
    else:
        raise AssertionError(f"commands never stopped: {w.per_change}")
    assert all(n <= BOUND for n in w.per_change.values()), (w.per_change, w.state.to_json())
    assert sum(w.per_change.values()) <= domain.MAX_COMMANDS_PER_CHANGE * w.changes, w.per_change


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(values)), st.booleans())
def test_both_sides_refusing_everything_ends_in_one_conflict_after_two_commands(f: str, guarded: bool) -> None:
    """The cycle of issue 14: the change refused, its revert refused; the old hub sent the change again forever."""
    w = RefusingWorld([], guarded)  # every answer is a refusal
    if guarded and f == "status":
        w.actual["pm"]["status"] = w.actual["crm"]["status"] = w.state.canon["status"] = "closed"
        w.state.pm_seen["status"] = w.state.crm_seen["status"] = "closed"
    w.edit("crm", f, [v for v in values[f] if v != w.actual["crm"][f]][0])
    while w.deliver("crm") | w.deliver("pm") | w.answer("pm") | w.answer("crm"):
        pass
    # refused by the hub's own rule (S10): one correction, refused; else the change and its revert, both refused
    assert w.per_change == {1: 1 if guarded and f == "status" else 2}, w.per_change
    assert w.conflicts == 1
