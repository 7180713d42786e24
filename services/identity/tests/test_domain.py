"""Unit tests of identity's pure rules (no broker, no database)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from hub_identity import domain
from hub_identity.domain import Candidate, ProfileVersion, UserFacts
from hub_schema.events.common import PermissionProfile
from hub_schema.names import normalise_email

T = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
P1 = PermissionProfile(role="employee", permissions=["add_task"])
P2 = PermissionProfile(role="manager", permissions=["add_task", "edit_project"])


def test_S13_email_matching_is_trimmed_and_case_insensitive() -> None:
    assert normalise_email("  Taro.Yamada@Example.CO.JP ") == "taro.yamada@example.co.jp"
    assert normalise_email("   ") is None
    assert normalise_email(None) is None


def test_only_newer_versions_apply() -> None:
    assert domain.is_newer(1, None)
    assert domain.is_newer(3, 2)
    assert not domain.is_newer(2, 2)
    assert not domain.is_newer(1, 2)


def test_S23_profile_applies_from_the_change_on_never_retroactively() -> None:
    assert domain.profile_effective_from(None, T) == T
    assert domain.profile_effective_from(T - timedelta(days=3), T) == T
    assert domain.profile_effective_from(T + timedelta(hours=1), T) == T + timedelta(hours=1)


def test_S23_profile_at_time_t() -> None:
    history = [ProfileVersion(1, P1, T), ProfileVersion(2, P2, T + timedelta(hours=2))]
    assert domain.profile_at(history, T - timedelta(seconds=1)) == domain.DEFAULT_PROFILE
    assert domain.profile_at(history, T) == P1
    assert domain.profile_at(history, T + timedelta(hours=1)) == P1
    assert domain.profile_at(history, T + timedelta(hours=2)) == P2


def test_S19_duplicates_among_candidates_are_named() -> None:
    found = domain.find_duplicate_emails(
        [Candidate("c1", "Hanako", "Hanako@Acme.example"), Candidate("c2", "Ken", "hanako@acme.example"),
         Candidate("c3", "Yuki", "yuki@acme.example")], taken={})
    assert len(found) == 1
    assert found[0].email == "hanako@acme.example"
    assert found[0].record_ids == ("c1", "c2")
    assert "Hanako (c1)" in found[0].describe() and "Ken (c2)" in found[0].describe()


def test_S19_email_already_held_by_another_client_user() -> None:
    found = domain.find_duplicate_emails([Candidate("c3", "Yuki", "YUKI@acme.example")], taken={"yuki@acme.example": "cu-7"})
    assert [(d.email, d.existing_client_user_id) for d in found] == [("yuki@acme.example", "cu-7")]
    assert domain.find_duplicate_emails([Candidate("c3", "Yuki", "yuki@acme.example")], taken={}) == []


def test_S18_import_plan_skips_with_reasons() -> None:
    plan = domain.plan_import([
        UserFacts("u1", "a@x.example", "A", True),
        UserFacts("u2", "b@x.example", "B", True, already_member=True),
        UserFacts("u3", None, None, False, known=False),
        UserFacts("u4", "d@x.example", "D", False),
        UserFacts("u5", "e@x.example", "E", True, pending=True),
    ], "portal_user")
    assert [u.crm_user_id for u in plan.add] == ["u1"]
    assert [(i, c) for i, c, _ in plan.skip] == [("u2", "already_member"), ("u3", "unknown_user"),
                                                 ("u4", "inactive_user"), ("u5", "already_pending")]


def test_notification_request_id_is_stable() -> None:
    r = uuid.uuid4()
    assert domain.notification_request_id(r, "k") == domain.notification_request_id(r, "k")
    assert domain.notification_request_id(r, "k") != domain.notification_request_id(uuid.uuid4(), "k")
