"""Property tests of linking's pure rules (hub_linking.domain): name matching, duplicate e-mails, keys, field kinds."""

from __future__ import annotations

import random
import string

from hypothesis import assume, given
from hypothesis import strategies as st

from hub_linking import domain
from hub_schema.names import normalise_company_name

words = st.text(string.ascii_letters, min_size=2, max_size=8).filter(
    lambda w: normalise_company_name(w) == w.casefold())  # not a company form ("Inc", "Ltd", …) itself
names = st.lists(words, min_size=1, max_size=3).map(" ".join)


@given(st.text(max_size=40))
def test_normalise_name_is_total_and_idempotent(name: str) -> None:
    once = normalise_company_name(name)
    assert normalise_company_name(once) == once


@given(names, st.sampled_from(["", " Inc.", " Co., Ltd.", " 株式会社", "株式会社 ", " LLC", " (株)"]), st.booleans())
def test_a_client_matches_its_account_whatever_suffix_and_case(name: str, suffix: str, upper: bool) -> None:
    client = (name.upper() if upper else name) + suffix
    index = domain.index_accounts([("acc-1", name), ("acc-2", name + "x zz")])
    result = domain.match_client("cc-1", client, index)
    assert (result.outcome, result.account_id) == ("matched", "acc-1")


@given(st.lists(st.tuples(st.sampled_from(["a1", "a2", "a3", "a4"]), names), max_size=6), names, st.randoms(use_true_random=False))
def test_matching_does_not_depend_on_account_order(accounts: list, client: str, rnd: random.Random) -> None:
    shuffled = list(accounts)
    rnd.shuffle(shuffled)
    a = domain.match_client("cc", client, domain.index_accounts(accounts))
    b = domain.match_client("cc", client, domain.index_accounts(shuffled))
    assert a.outcome == b.outcome
    if a.outcome == "matched":
        assert a.account_id == b.account_id


@given(st.lists(st.tuples(st.text(string.ascii_lowercase, min_size=1, max_size=3),
                          st.one_of(st.none(), st.sampled_from(["a@x.jp", "A@x.jp ", "b@x.jp", " B@X.JP"]))), max_size=8),
       st.randoms(use_true_random=False))
def test_duplicate_emails_are_order_independent_and_complete(contacts: list, rnd: random.Random) -> None:
    shuffled = list(contacts)
    rnd.shuffle(shuffled)
    found = domain.duplicate_emails(contacts)
    assert found == domain.duplicate_emails(shuffled)
    for email, ids in found.items():
        assert len(ids) > 1 and email == email.strip().lower()


@given(st.text(max_size=60))
def test_only_the_issued_key_matches_its_hash(other: str) -> None:
    key = domain.new_service_key()
    stored = domain.key_sha256(key)
    assert domain.key_matches(key, stored)
    assume(other != key)
    assert not domain.key_matches(other, stored)


KINDS = ["string", "integer", "decimal", "boolean", "any"]


@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_inferred_field_kind_does_not_depend_on_record_order(kinds: list[str], rnd: random.Random) -> None:
    def infer(seq: list[str]) -> str | None:
        kind: str | None = None
        for k in seq:
            kind = domain.merge_kind(kind, k)
        return kind

    shuffled = list(kinds)
    rnd.shuffle(shuffled)
    assert infer(kinds) == infer(shuffled)
