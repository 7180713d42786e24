"""The shared name and e-mail normalisers (identity's pairing and linking's matching both use them)."""

import pytest

from hub_schema.names import normalise_company_name, normalise_email


@pytest.mark.parametrize("name", [
    "株式会社サンプル", "サンプル株式会社", "ｻﾝﾌﾟﾙ株式会社", "サンプル(株)", "㈱サンプル", "（株）サンプル", " サンプル ",
])
def test_japanese_company_forms_and_widths_are_one_name(name: str) -> None:
    assert normalise_company_name(name) == "サンプル"


@pytest.mark.parametrize("name", ["Acme Inc.", "ACME, Inc", "Ａｃｍｅ", "acme corporation", "Acme Co., Ltd."])
def test_latin_company_forms_case_and_widths_are_one_name(name: str) -> None:
    assert normalise_company_name(name) == "acme"


def test_different_companies_stay_different() -> None:
    assert normalise_company_name("サンプル商事") != normalise_company_name("サンプル")
    assert normalise_company_name("Acme Tools") != normalise_company_name("Acme")


def test_a_name_that_is_only_a_company_form_has_nothing_to_compare() -> None:
    assert normalise_company_name("株式会社") == ""
    assert normalise_company_name(None) == ""


def test_email_is_trimmed_lowered_and_half_width() -> None:
    assert normalise_email("  Taro.Yamada@Example.JP ") == "taro.yamada@example.jp"
    assert normalise_email("ｔａｒｏ＠example.jp") == "taro@example.jp"
    assert normalise_email("   ") is None
    assert normalise_email(None) is None
