"""Identity and linking agree on which account and client company are one company (issue 16).

Identity pairs an account with a client company when either is created (S13, `hub_identity.rows.name_norm`);
linking matches clients to accounts when asked (S21/S22, `hub_linking.domain.match_client`). Both read names
through `hub_schema.names`, and this test checks the two services' own entry points give the same answer for
names written the ways Japanese and English company names are written.
"""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from hub_identity.rows import name_norm
from hub_linking.domain.matching import index_accounts, match_client

STEMS = ["サンプル", "サンプル商事", "Acme", "Acme Tools", "Initech", "東京電機", "Globex"]
FORMS = ["", "株式会社", "(株)", "㈱", "（株）", "有限会社", "合同会社", " Inc.", ", Inc", " Co., Ltd.", " Corporation", " LLC", " KK"]


def written(stem: str, form: str, before: bool, wide: bool, upper: bool) -> str:
    name = f"{form.strip()}{stem}" if before and form.strip() in ("株式会社", "(株)", "㈱", "（株）", "有限会社", "合同会社") else f"{stem}{form}"
    if upper:
        name = name.upper()
    if wide:  # the full-width forms an IME produces (ASCII → U+FF01..)
        name = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name)
    return name


names = st.builds(written, st.sampled_from(STEMS), st.sampled_from(FORMS), st.booleans(), st.booleans(), st.booleans())


def identity_pairs(account: str, company: str) -> bool:
    a, c = name_norm(account), name_norm(company)
    return bool(a) and a == c


def linking_matches(account: str, client: str) -> bool:
    return match_client("c-1", client, index_accounts([("a-1", account)])).outcome == "matched"


@settings(max_examples=400, deadline=None)
@given(names, names)
def test_identity_pairs_exactly_the_names_linking_matches(account: str, company: str) -> None:
    assert identity_pairs(account, company) == linking_matches(account, company), (account, company)


def test_the_japanese_forms_of_one_company_agree_in_both_services() -> None:
    variants = ["株式会社サンプル", "サンプル株式会社", "ｻﾝﾌﾟﾙ(株)", "㈱サンプル", unicodedata.normalize("NFKC", "サンプル")]
    for account in variants:
        for company in variants:
            assert identity_pairs(account, company) and linking_matches(account, company), (account, company)
    assert not identity_pairs("サンプル商事", "サンプル") and not linking_matches("サンプル商事", "サンプル")
