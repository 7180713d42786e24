"""Unit tests of the pure rules (no broker, no database)."""

from __future__ import annotations

from hub_linking import domain, rows


def test_S21_matching_reads_names_through_the_shared_normaliser() -> None:
    """「株式会社サンプル」, 「サンプル株式会社」 and full-width 「ｻﾝﾌﾟﾙ(株)」 are one company (as for identity)."""
    index = domain.index_accounts([("a1", "サンプル株式会社"), ("a2", "ＡＣＭＥ 株式会社")])
    assert domain.match_client("c1", "株式会社サンプル", index).account_id == "a1"
    assert domain.match_client("c2", "ｻﾝﾌﾟﾙ(株)", index).account_id == "a1"
    assert domain.match_client("c3", "Acme Inc.", index).account_id == "a2"


def test_S22_match_outcomes_have_reasons() -> None:
    index = domain.index_accounts([("a1", "Acme Inc"), ("g1", "Globex"), ("g2", "GLOBEX Corp")])
    assert domain.match_client("c1", "ACME", index).account_id == "a1"
    ambiguous = domain.match_client("c2", "Globex Ltd", index)
    assert ambiguous.outcome == "ambiguous" and "g1" in ambiguous.reason and "g2" in ambiguous.reason
    assert domain.match_client("c3", "Umbrella", index).outcome == "no_match"
    assert domain.match_client("c4", "(株)", index).outcome == "error"


def test_S6_mapping_validation() -> None:
    custom = {("deals", "Project_Type"): "string", ("accounts", "Seats"): "integer", ("deals", "Flag"): "boolean"}
    ok = [{"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"},
          {"pm_field": "kind", "crm_module": "deals", "crm_field": "Project_Type", "crm_field_type": "picklist"},
          {"pm_field": "seats", "crm_module": "accounts", "crm_field": "Seats"}]
    assert domain.validate_mapping(ok, custom, {"seats": "number"}) == []
    bad = [{"pm_field": "x", "crm_module": "accounts", "crm_field": "Nope"},
           {"pm_field": "start_date", "crm_module": "deals", "crm_field": "Amount"},
           {"pm_field": "seats", "crm_module": "deals", "crm_field": "Flag"},
           {"pm_field": "y", "crm_module": "deals", "crm_field": "Project_Type", "crm_field_type": "integer"}]
    problems = domain.validate_mapping(bad, custom, {"seats": "number"})
    assert [p.crm_field for p in problems] == ["Nope", "Amount", "Flag", "Project_Type"]
    assert "unknown field" in problems[0].text()
    assert "incompatible" in problems[1].text() and "incompatible" in problems[2].text()


def test_S14_project_built_from_mapping() -> None:
    mapping = [{"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"},
               {"pm_field": "end_date", "crm_module": "deals", "crm_field": "Closing_Date"},
               {"pm_field": "region", "crm_module": "accounts", "crm_field": "Region"},
               {"pm_field": "missing", "crm_module": "deals", "crm_field": "Nothing"}]
    draft = domain.project_from_mapping(mapping, {"name": "Rollout", "closing_date": "2024-04-30", "custom_fields": {}},
                                        {"name": "Acme", "custom_fields": {"Region": "Kanto"}})
    assert draft.name == "Rollout" and str(draft.end_date) == "2024-04-30"
    assert draft.custom_fields == {"region": "Kanto"}


def test_S19_duplicate_emails_are_case_insensitive() -> None:
    dups = domain.duplicate_emails([("c1", "A@x.example"), ("c2", " a@x.example"), ("c3", "b@x.example"), ("c4", None)])
    assert dups == {"a@x.example": ["c1", "c2"]}


def test_S4_who_may_associate() -> None:
    member = domain.Actor("u", True, False, frozenset({"associate_project"}), "pu-1")
    def project(*members: str) -> rows.Project:
        return rows.Project("o", "p", "pr", "P", "active", 0, owner_id="pu-9", version=1, user_ids=list(members))

    assert domain.may_link_project(member, project("pu-1"))
    assert not domain.may_link_project(member, project("pu-2"))
    nobody = domain.Actor("u", True, False, frozenset({"add_task"}), "pu-1")
    assert domain.may_link_at_all(nobody)[1] == "permission_denied"
    assert domain.may_change_settings(member)[1] == "not_admin"


def test_S24_keys_are_random_and_compared_by_hash() -> None:
    a, b = domain.new_service_key(), domain.new_service_key()
    assert a != b and len(a) > 40
    assert domain.key_matches(a, domain.key_sha256(a)) and not domain.key_matches(b, domain.key_sha256(a))


def test_report_pages_fit_a_message_whatever_the_names_and_keep_every_row_in_order() -> None:
    """Issue 15: a report is cut by encoded size (long Japanese names make small pages), never truncated."""
    from hub_schema.events.notifications import MatchedClient, UnmatchedClient

    long_ja = "株式会社" * 63  # 252 characters, 756 bytes in UTF-8
    matched = [MatchedClient(client_company_id=f"cc-{i}", client_name=long_ja, account_id=f"acc-{i}",
                             account_name=long_ja) for i in range(3000)]
    unmatched = [UnmatchedClient(client_company_id=f"cu-{i}", client_name=f"Client {i}", reason_code="no_match",
                                 reason="no account has this name") for i in range(2500)]
    pages = domain.report_pages(matched, unmatched)
    assert [m for page in pages for m in page[0]] == matched
    assert [u for page in pages for u in page[1]] == unmatched
    for page_matched, page_unmatched in pages:
        assert sum(len(r.model_dump_json().encode()) + 1 for r in [*page_matched, *page_unmatched]) <= domain.PAGE_BYTES
        assert len(page_matched) <= domain.PAGE_ROWS and len(page_unmatched) <= domain.PAGE_ROWS
    assert domain.report_pages([], []) == [([], [])]
