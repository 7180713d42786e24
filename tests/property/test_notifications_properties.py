"""Property tests of the notification service's pure rules (hub_notifications.domain)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from hub_notifications import domain

kinds = st.sampled_from(sorted(domain.MANDATORY_KINDS | domain.OPTIONAL_KINDS))


@given(kinds, st.booleans())
def test_a_mandatory_kind_is_never_suppressible(kind: str, optional: bool) -> None:
    if domain.is_suppressible(kind, optional):
        assert kind in domain.OPTIONAL_KINDS and optional
    if kind in domain.MANDATORY_KINDS:
        assert not domain.is_suppressible(kind, optional)


@given(st.text(max_size=300))
def test_address_problem_is_total(address: str) -> None:
    result = domain.address_problem(address)
    assert result is None or (isinstance(result, str) and result)
    if result is None:
        assert address.count("@") == 1 and len(address) <= 254


@given(st.uuids(), st.text(min_size=1, max_size=30))
def test_message_id_is_stable_per_request(rid: uuid.UUID, dom: str) -> None:
    assert domain.message_id(rid, dom) == domain.message_id(uuid.UUID(str(rid)), dom)
    assert str(rid) in domain.message_id(rid, dom)


@given(st.integers(1, 50), st.floats(0.01, 10), st.floats(0.01, 600), st.floats(0, 1, exclude_max=True))
def test_retry_delay_is_bounded_by_the_cap_and_half_fixed(attempt: int, base: float, cap: float, rnd: float) -> None:
    delay = domain.retry_delay(attempt, base, cap, rnd)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9
    assert delay <= cap + 1e-9


@given(st.one_of(st.none(), st.integers(100, 599)), st.booleans(), st.booleans())
def test_smtp_error_classification_is_total(code: int | None, reached: bool, auth: bool) -> None:
    cls = domain.classify_smtp_error(code, reached_server=reached, during_auth=auth)
    assert cls in ("outage", "transient", "permanent")
    if not reached:
        assert cls == "outage"  # an unreachable server never uses up a mail's attempts


@given(st.one_of(st.none(), st.text(max_size=80)))
def test_display_name_cannot_inject_headers(name: str | None) -> None:
    cleaned = domain.clean_display_name(name)
    assert "\r" not in cleaned and "\n" not in cleaned
