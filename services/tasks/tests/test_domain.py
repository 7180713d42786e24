"""Unit tests of the pure mirroring rules (no broker, no database)."""

from __future__ import annotations

from hub_tasks import domain
from hub_tasks.domain import Echo, Guard, LinkedProject, State, apply_change, beats, reconcile
from hub_tasks.records import User

T1, T2, T3 = "2024-04-01T09:01:00+00:00", "2024-04-01T09:02:00+00:00", "2024-04-01T09:03:00+00:00"
BASE = {"title": "A", "description": None, "due_date": None, "priority": "medium", "status": "open", "owner_id": "u-1"}


def synced() -> State:
    st = State.initial("pm", BASE, T1)
    st.bind("crm", BASE)
    return st


def test_S5_only_flagged_non_recurring_tasks_mirror() -> None:
    assert domain.pm_task_skip_reason(recurring=True, add_to_crm=True)[0] == "recurring"  # type: ignore[index]
    assert domain.pm_task_skip_reason(recurring=False, add_to_crm=False)[0] == "not_flagged"  # type: ignore[index]
    assert domain.pm_task_skip_reason(recurring=False, add_to_crm=True) is None


def test_conflict_newer_wins_tie_goes_to_pm() -> None:
    assert beats([T2, "crm"], [T1, "pm"])
    assert not beats([T1, "crm"], [T2, "pm"])
    assert beats([T1, "pm"], [T1, "crm"]) and not beats([T1, "crm"], [T1, "pm"])
    assert beats(["2024-04-01T18:00:00+09:00", "pm"], ["2024-04-01T08:59:00+00:00", "crm"]), "compared in UTC"


def test_change_is_pushed_to_the_other_side_only() -> None:
    st = synced()
    out = apply_change(st, "pm", {**BASE, "title": "B"}, T2)
    assert out.push_other == {"title": "B"} and not out.push_self
    assert out.source_at == {"title": T2}


def test_loop_echo_with_equal_content_pushes_nothing() -> None:
    st = synced()
    apply_change(st, "pm", {**BASE, "title": "B"}, T2)
    out = apply_change(st, "crm", {**BASE, "title": "B"}, T3, echo=Echo({"title": "B"}, {"title": T2}))
    assert not out.push_other and not out.push_self and not out.accepted
    assert st.crm_at["title"] == [T2, "crm"], "an echo keeps the original change's time"


def test_late_echo_of_outdated_command_loses_to_newer_change() -> None:
    st = synced()
    apply_change(st, "pm", {**BASE, "title": "from PM"}, "2024-04-01T09:01:30+00:00")  # pushes to CRM
    apply_change(st, "crm", {**BASE, "title": "from CRM"}, T2)  # newer: wins
    out = apply_change(st, "crm", {**BASE, "title": "from PM"}, T3, echo=Echo({"title": "from PM"}, {"title": T1}))
    assert out.lost == ["title"] and out.push_self == {"title": "from CRM"}
    assert st.canon["title"] == "from CRM"


def test_S10_reopen_under_closed_parent_is_refused_and_reverted() -> None:
    st = State.initial("pm", {**BASE, "status": "closed"}, T1)
    st.bind("crm", {**BASE, "status": "closed"})
    out = apply_change(st, "crm", {**BASE, "status": "open"}, T2, guard=Guard(parent_closed=True, parent_task_id="p"))
    assert [r[1] for r in out.refused] == ["parent_task_closed"]
    assert out.push_self == {"status": "closed"} and not out.push_other


def test_S11_due_date_change_in_fixed_project_is_refused_other_fields_pass() -> None:
    st = synced()
    out = apply_change(st, "crm", {**BASE, "due_date": "2024-05-01", "priority": "high"}, T2,
                       guard=Guard(schedule_fixed=True))
    assert [r[1] for r in out.refused] == ["schedule_fixed"]
    assert out.push_other == {"priority": "high"} and out.push_self == {"due_date": None}


def test_S11_pm_side_may_change_due_date_of_fixed_project() -> None:
    st = synced()
    out = apply_change(st, "pm", {**BASE, "due_date": "2024-05-01"}, T2, guard=Guard(schedule_fixed=True))
    assert out.push_other == {"due_date": "2024-05-01"}


def test_S7_disabled_tracks_values_without_pushing_then_reconcile_picks_newest() -> None:
    st = synced()
    out = apply_change(st, "pm", {**BASE, "title": "P"}, T2, enabled=False)
    assert out.changed == ["title"] and not out.push_other
    apply_change(st, "crm", {**BASE, "title": "C", "priority": "high"}, T3, enabled=False)
    to_pm, to_crm = reconcile(st)
    assert to_pm == {"title": "C", "priority": "high"} and to_crm == {}


def test_S12_project_choice() -> None:
    one = [LinkedProject("portal-1", "proj-1")]
    two = one + [LinkedProject("portal-1", "proj-2")]
    assert domain.choose_project("deal", "d", one, None) == one[0]
    assert domain.choose_project("deal", "d", [], None)[0] == "no_linked_project"  # type: ignore[index]
    assert domain.choose_project("deal", "d", two, None)[0] == "ambiguous_project"  # type: ignore[index]
    assert domain.choose_project("deal", "d", two, "proj-2") == two[1]
    assert domain.choose_project("deal", "d", one, "proj-9")[0] == "project_not_linked"  # type: ignore[index]
    assert domain.choose_project("lead", "l", one, None)[0] == "unsupported_record_type"  # type: ignore[index]


def test_S12_permission() -> None:
    assert domain.may_add_task(None) is not None
    def user(active: bool, permissions: list[str]) -> User:
        return User(org_id="o", crm_user_id="u", email="u@example.com", name="U", locale="en", active=active,
                    portal_user_id=None, permissions=permissions, revision=1)

    assert domain.may_add_task(user(True, ["add_task"])) is None
    assert domain.may_add_task(user(True, []))[0] == "permission_denied"  # type: ignore[index]
    assert domain.may_add_task(user(False, ["add_task"])) is not None


# --- issue 14: two sides that both say no; the command budget ---------------------------


def test_refused_change_is_taken_back_and_the_source_side_reverted() -> None:
    st = synced()
    apply_change(st, "crm", {**BASE, "title": "B"}, T2)  # agreed B, sent to the PM side
    tb = domain.take_back(st, "pm", {"title": "B"}, cause="change", occurred_at=T3)
    assert tb.revert == {"title": "A"} and not tb.conflict
    assert st.canon["title"] == "A", "the refusing side's value is the agreed one again"


def test_refused_revert_is_a_conflict_and_nothing_more_is_sent() -> None:
    st = synced()
    apply_change(st, "crm", {**BASE, "title": "B"}, T2)
    domain.take_back(st, "pm", {"title": "B"}, cause="change", occurred_at=T3)  # revert {"title": "A"} to the CRM
    before = st.to_json()
    tb = domain.take_back(st, "crm", {"title": "A"}, cause="revert", occurred_at=T3)
    assert tb.conflict == ["title"] and tb.revert == {}
    assert st.to_json() == {**before, "apart": ["title"]}, \
        "a conflict changes no value (the agreed one stays the refusing PM side's); it only marks the field apart"
    assert State.from_json(st.to_json()).apart == ["title"], "kept with the mapping"


def conflicted_on_title() -> State:
    """The CRM set title B, the PM side refused it, the CRM refused the revert: PM holds A (agreed), CRM holds B."""
    st = synced()
    apply_change(st, "crm", {**BASE, "title": "B"}, T2)
    domain.take_back(st, "pm", {"title": "B"}, cause="change", occurred_at=T3)
    domain.take_back(st, "crm", {"title": "A"}, cause="revert", occurred_at=T3)
    assert st.pm_seen["title"] == st.canon["title"] == "A" and st.crm_seen["title"] == "B" and st.apart == ["title"]
    return st


def test_a_real_edit_on_the_side_holding_the_agreed_value_heals_the_other() -> None:
    st = conflicted_on_title()
    out = apply_change(st, "pm", {**BASE, "priority": "high"}, "2024-04-01T09:04:00+00:00")
    assert out.push_other == {"priority": "high", "title": "A"} and out.healed == ["title"] and not out.push_self
    assert st.apart == [], "sent once; a refusal of it is a new exchange with its own bound"


def test_a_real_edit_on_the_side_that_differs_corrects_it() -> None:
    st = conflicted_on_title()
    out = apply_change(st, "crm", {**BASE, "title": "B", "priority": "high"}, "2024-04-01T09:04:00+00:00")
    assert out.push_other == {"priority": "high"} and out.push_self == {"title": "A"} and out.healed == ["title"]


def test_an_edit_of_the_apart_field_itself_merges_like_any_change() -> None:
    st = conflicted_on_title()
    out = apply_change(st, "crm", {**BASE, "title": "C"}, "2024-04-01T09:04:00+00:00")
    assert out.push_other == {"title": "C"} and not out.healed and st.apart == []


def test_an_echo_or_a_disabled_side_does_not_heal() -> None:
    st = conflicted_on_title()
    out = apply_change(st, "pm", {**BASE, "priority": "low"}, "2024-04-01T09:04:00+00:00", enabled=False)
    assert not out.healed and st.apart == ["title"]
    out = apply_change(st, "pm", {**BASE, "priority": "high"}, "2024-04-01T09:05:00+00:00",
                       echo=Echo({"priority": "high"}, {"priority": T2}))
    assert not out.healed and st.apart == ["title"]
    to_pm, to_crm = reconcile(st)
    assert "title" in {**to_pm, **to_crm} and st.apart == [], "a resync settles every field by the policy anyway"


def test_refused_correction_of_an_S11_refusal_is_a_conflict() -> None:
    st = synced()
    out = apply_change(st, "crm", {**BASE, "due_date": "2024-05-01"}, T2, guard=Guard(schedule_fixed=True))
    assert out.push_self == {"due_date": None}
    tb = domain.take_back(st, "crm", out.push_self, cause="correction", occurred_at=T3)
    assert tb.conflict == ["due_date"] and not tb.revert


def test_refused_revert_made_moot_by_a_newer_change_is_no_conflict() -> None:
    st = synced()
    apply_change(st, "crm", {**BASE, "title": "B"}, T2)
    domain.take_back(st, "pm", {"title": "B"}, cause="change", occurred_at=T3)  # revert A to the CRM
    apply_change(st, "crm", {**BASE, "title": "C"}, T3)  # the CRM user changed it again meanwhile
    tb = domain.take_back(st, "crm", {"title": "A"}, cause="revert", occurred_at=T3)
    assert not tb.conflict and not tb.revert


def test_command_budget_allows_limit_commands_per_window_then_refuses() -> None:
    from datetime import datetime, timedelta, timezone

    budget = domain.Budget(3, timedelta(minutes=10))
    now = datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc)
    start, used = None, 0
    allowed = []
    for i in range(5):
        spent = domain.spend(budget, start, used, now + timedelta(seconds=i))
        start, used = spent.window_start, spent.used
        allowed.append(spent.allowed)
    assert allowed == [True, True, True, False, False]
    assert start == now and used == 3
    later = domain.spend(budget, start, used, now + timedelta(minutes=10))
    assert later.allowed and later.used == 1 and later.window_start == now + timedelta(minutes=10), "a new window"


def test_follow_up_refused_for_a_stale_base_is_sent_again_not_a_conflict() -> None:
    st = synced()
    apply_change(st, "crm", {**BASE, "title": "B"}, T2)
    domain.take_back(st, "pm", {"title": "B"}, cause="change", occurred_at=T3)  # revert A to the CRM
    apply_change(st, "crm", {**BASE, "title": "B", "priority": "low"}, T3)  # the CRM task changed again (another field)
    tb = domain.take_back(st, "crm", {"title": "A"}, cause="revert", occurred_at=T3, code="version_conflict")
    assert tb.retry == {"title": "A"} and not tb.conflict and not tb.revert
