"""Property tests of identity's pure rules (services/identity/src/hub_identity/domain.py)."""

from __future__ import annotations

import random
import string
import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from hub_identity import domain
from hub_schema.events.common import PermissionProfile
from hub_schema.names import normalise_email

ascii_emails = st.builds(
    lambda local, host: f"{local}@{host}.example",
    st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=12),
    st.text(string.ascii_letters + string.digits, min_size=1, max_size=10),
)


@given(st.text(max_size=60))
def test_normalise_email_is_idempotent(email: str) -> None:
    once = normalise_email(email)
    assert once is None or normalise_email(once) == once


@given(ascii_emails, st.text(" \t", max_size=3), st.text(" \t", max_size=3), st.data())
def test_normalise_email_ignores_case_and_surrounding_blanks(email: str, pre: str, post: str, data: st.DataObject) -> None:
    mixed = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in email)
    assert normalise_email(pre + mixed + post) == normalise_email(email) == email.lower()


@given(st.text(" \t\n", max_size=5))
def test_blank_email_is_none(blank: str) -> None:
    assert normalise_email(blank) is None


@given(st.lists(st.integers(1, 50), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_versions_applied_in_any_order_end_at_the_newest_and_each_at_most_once(versions: list[int], rnd: random.Random) -> None:
    rnd.shuffle(versions)
    stored: int | None = None
    applied: list[int] = []
    for v in versions:
        if domain.is_newer(v, stored):
            applied.append(v)
            stored = v
    assert stored == max(versions)
    assert len(applied) == len(set(applied))  # a duplicate is never applied twice
    assert applied == sorted(applied)  # an older version never overwrites a newer one


candidates = st.lists(
    st.builds(domain.Candidate, record_id=st.text(string.ascii_lowercase, min_size=1, max_size=4),
              name=st.text(max_size=5), email=ascii_emails),
    max_size=8,
)


@given(candidates, st.dictionaries(ascii_emails.map(str.lower), st.text(min_size=1, max_size=4), max_size=3), st.randoms(use_true_random=False))
def test_duplicates_are_found_whatever_the_order(cands: list[domain.Candidate], taken: dict[str, str], rnd: random.Random) -> None:
    found = domain.find_duplicate_emails(cands, taken)
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    again = domain.find_duplicate_emails(shuffled, taken)
    assert [(d.email, sorted(d.record_ids), d.existing_client_user_id) for d in found] == \
        [(d.email, sorted(d.record_ids), d.existing_client_user_id) for d in again]
    counts: dict[str, int] = {}
    for c in cands:
        key = normalise_email(c.email)
        counts[key] = counts.get(key, 0) + 1  # type: ignore[index]
    expected = {e for e, n in counts.items() if n > 1 or e in taken}
    assert {d.email for d in found} == expected
    assert all(d.describe() for d in found)


T0 = datetime(2024, 4, 1, tzinfo=timezone.utc)
moments = st.integers(0, 1000).map(lambda m: T0 + timedelta(minutes=m))
profiles = st.builds(PermissionProfile, role=st.sampled_from(["employee", "manager"]),
                     permissions=st.lists(st.sampled_from(["add_task", "associate_project"]), unique=True))


@given(st.lists(st.tuples(moments, profiles), max_size=8), moments, st.randoms(use_true_random=False))
def test_profile_at_does_not_depend_on_history_order(entries: list, at: datetime, rnd: random.Random) -> None:
    history = [domain.ProfileVersion(i + 1, p, t) for i, (t, p) in enumerate(entries)]
    shuffled = list(history)
    rnd.shuffle(shuffled)
    result = domain.profile_at(history, at)
    assert domain.profile_at(shuffled, at) == result
    applicable = [h for h in history if h.effective_from <= at]
    if not applicable:
        assert result == domain.DEFAULT_PROFILE
    else:
        assert result in [h.profile for h in applicable]


@given(st.one_of(st.none(), moments), moments)
def test_profile_never_applies_before_it_was_changed(requested: datetime | None, now: datetime) -> None:
    eff = domain.profile_effective_from(requested, now)
    assert eff >= now
    assert requested is None or eff == max(requested, now)


@given(st.uuids(), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_notification_request_id_is_deterministic_and_kind_specific(rid: uuid.UUID, a: str, b: str) -> None:
    assert domain.notification_request_id(rid, a) == domain.notification_request_id(rid, a)
    if a != b:
        assert domain.notification_request_id(rid, a) != domain.notification_request_id(rid, b)
