"""What a person reads: their language throughout, names instead of ids, times in their own time zone.

A Japanese mail must not carry the producer's English `reason` sentence: the reason is worded from
`reason_code` + `reason_params` by the locale's templates (templates/<locale>/_reasons.j2).
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from typing import Any

import openpyxl
import pytest
from hub_schema.events.common import RejectionCode
from hub_schema.events.notifications import MatchedClient, MatchingReport, NotificationKind, UnmatchedClient

from hub_notifications.render import Renderer, local_datetime
from hub_notifications.report import matching_report_xlsx

ENGLISH_REASON = "the PM side refused the change: parent task pt-0 is closed"
# Codes the producers put in reason_code (tasks refusals, upstream rejections, S21/S22 matching, S18 import).
KNOWN_CODES = sorted({*RejectionCode.__args__, "no_linked_project", "project_not_linked", "ambiguous_project",
                      "too_many_linked_records",  # type: ignore[attr-defined]
                      "unsupported_record_type", "no_match", "ambiguous", "error", "unknown_user", "inactive_user",
                      "already_member", "already_pending"})
KINDS = list(NotificationKind.__args__)  # type: ignore[attr-defined]
# Words allowed in a Japanese mail: product names and abbreviations, never a sentence.
ALLOWED_LATIN = {"CRM", "SyncHub", "ID", "Excel", "JST"}

REPORT = {"portal_id": "p-1", "finished_at": "2026-11-30T07:50:04.855782+00:00", "matched": [], "unmatched": []}


def data_ja(code: str) -> dict[str, Any]:
    return {"task_name": "資料の準備", "task_id": "ct-77", "parent_task_name": "新製品発表", "parent_task_id": "pt-0",
            "project_name": "サイト刷新", "record_type": "account", "record_id": "crm-account-2",
            "record_name": "株式会社アクメ", "record_url": "https://crm.example/accounts/crm-account-2",
            "reason_code": code, "reason": ENGLISH_REASON,
            "reason_params": {"parent_task_name": "新製品発表", "project_name": "サイト刷新", "record_type": "account",
                              "record_name": "株式会社アクメ", "project_names": ["サイト刷新", "保守"],
                              "user_name": "佐藤", "user_state": "inactive", "email": "sato@example.com",
                              "record_count": 25, "limit": 20},
            "occurred_at": "2026-11-30T07:50:04.855782Z", "requested_due_date": "2026-12-24",
            "current_due_date": "2026-12-10", "portal_name": "アクメ", "stopped_at": "2026-11-30T07:50:04Z",
            "email": "sato@example.com", "contacts": [{"id": "c-1", "name": "佐藤"}, {"id": "c-2", "name": "鈴木"}],
            "account_name": "株式会社アクメ", "import_as": "client_user", "imported": 1,
            "failed": [{"user_id": "u-3", "name": "田中", "email": "tanaka@example.com", "reason_code": code,
                        "reason": ENGLISH_REASON}]}


RENDERER = Renderer()


def render(kind: str, locale: str, data: dict[str, Any], time_zone: str | None = None) -> Any:
    return RENDERER.render(kind, locale, {
        "kind": kind, "request_id": "r-1", "org_id": "o", "recipient": {"email": "a@example.com", "time_zone": time_zone},
        "recipient_name": "佐藤", "data": data, "report": REPORT if kind == "matching_report" else None})


def latin_words(text: str) -> set[str]:
    without_addresses = re.sub(r"\S+@\S+|https?://\S+|[0-9a-f-]{36}", "", text)
    return set(re.findall(r"[A-Za-z]{2,}", without_addresses)) - ALLOWED_LATIN


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("code", [*KNOWN_CODES, "some_future_code"])
def test_a_japanese_mail_is_japanese_throughout(kind: str, code: str) -> None:
    out = render(kind, "ja", data_ja(code))
    for part in (out.subject, out.text):
        assert ENGLISH_REASON not in part
        assert latin_words(part) <= ({"some", "future", "code"} if code == "some_future_code" else set()), part
    html_text = re.sub(r"<[^>]+>", " ", out.html)
    assert ENGLISH_REASON not in html_text and latin_words(html_text) <= {"some", "future", "code"}, html_text


@pytest.mark.parametrize("locale", ["ja", "en"])
@pytest.mark.parametrize("code", KNOWN_CODES)
def test_every_reason_code_has_its_own_wording(locale: str, code: str) -> None:
    r = RENDERER
    worded = r.reason(code, locale, {}, None)
    generic = r.reason("some_future_code", locale, {}, None)
    assert worded and worded != generic and ENGLISH_REASON not in worded


def test_english_mail_words_known_codes_itself_and_falls_back_to_the_producers_sentence() -> None:
    r = RENDERER
    assert r.reason("schedule_fixed", "en", {"project_name": "Relaunch"}, ENGLISH_REASON) == (
        'The project "Relaunch" has a fixed schedule, so due dates cannot be changed.')
    assert r.reason("some_future_code", "en", {}, ENGLISH_REASON) == ENGLISH_REASON
    assert r.reason("some_future_code", "ja", {}, ENGLISH_REASON) == "連携先で受け付けられませんでした（理由コード: some_future_code）。"


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_records_are_named_and_linked_not_shown_by_id(locale: str) -> None:
    out = render("task_update_failed", locale, data_ja("invalid"))
    label = {"ja": "取引先", "en": "Account"}[locale]
    assert f"{label}: 株式会社アクメ" in out.text
    assert '<a href="https://crm.example/accounts/crm-account-2">株式会社アクメ</a>' in out.html
    assert "ct-77" not in out.text and "ct-77" not in out.html  # the task by its name only
    assert "crm-account-2" not in out.text.replace("https://crm.example/accounts/crm-account-2", "")


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_a_record_whose_name_is_unknown_is_not_shown_by_its_id(locale: str) -> None:
    data = {k: v for k, v in data_ja("invalid").items() if k not in ("record_name", "record_url")}
    out = render("task_create_refused", locale, data)
    assert "crm-account-2" not in out.text and "crm-account-2" not in out.html


@pytest.mark.parametrize(("locale", "line"), [("ja", "このアドレスを使っている既存のクライアントユーザー: 佐藤"),
                                              ("en", "Client user already using the address: 佐藤")])
def test_S18_S19_import_mail_names_who_already_holds_the_address(locale: str, line: str) -> None:
    out = render("duplicate_client_emails", locale, {**data_ja("duplicate_email"), "cause": "user_import",
                                                     "taken_by": ["佐藤"]})
    assert line in out.text


@pytest.mark.parametrize(("locale", "parent_line"), [("ja", "親タスク: 新製品発表"), ("en", "Parent task: 新製品発表")])
def test_S10_subtask_mail_names_its_parent_task(locale: str, parent_line: str) -> None:
    out = render("subtask_update_failed", locale, data_ja("parent_task_closed"))
    assert parent_line in out.text
    assert "pt-0" not in out.text


@pytest.mark.parametrize(("locale", "time_zone", "shown"), [
    ("ja", None, "2026年11月30日 16:50:04 JST"),  # ja with no zone of its own: Asia/Tokyo
    ("en", None, "November 30, 2026, 7:50:04\u202fAM UTC"),
    ("en", "America/New_York", "November 30, 2026, 2:50:04\u202fAM EST"),
    ("ja", "Europe/Berlin", "2026年11月30日 8:50:04 +0100"),
])
def test_times_are_shown_in_the_recipients_language_and_time_zone(locale: str, time_zone: str | None, shown: str) -> None:
    for kind in ("task_update_failed", "sync_stopped", "matching_report"):
        out = render(kind, locale, data_ja("invalid"), time_zone)
        assert shown.replace("\u202f", " ") in out.text.replace("\u202f", " "), (kind, out.text)
        assert "T07:50" not in out.text and "T07:50" not in out.html and "855782" not in out.text


def test_an_unknown_time_zone_falls_back_to_the_locales_own() -> None:
    when = datetime(2026, 11, 30, 7, 50, 4, tzinfo=timezone.utc)
    assert local_datetime(when, "ja", "Not/AZone") == local_datetime(when, "ja", None) == "2026年11月30日 16:50:04 JST"


@pytest.mark.parametrize("locale", ["ja", "en"])
def test_due_dates_are_written_as_dates_people_read(locale: str) -> None:
    out = render("due_date_change_failed", locale, data_ja("schedule_fixed"))
    assert {"ja": "2026年12月24日", "en": "December 24, 2026"}[locale] in out.text
    assert "2026-12-24" not in out.text


def test_S22_report_sheets_headers_and_reasons_follow_the_recipients_language() -> None:
    r = RENDERER
    report = MatchingReport(
        portal_id="p-1", finished_at=datetime(2026, 11, 30, tzinfo=timezone.utc),
        matched=[MatchedClient(client_company_id="cc-1", client_name="アクメ", account_id="acc-1", account_name="アクメ")],
        unmatched=[UnmatchedClient(client_company_id="cc-2", client_name="グローベックス", reason_code="no_match",
                                   reason="no CRM account named Globex")])
    ja = openpyxl.load_workbook(io.BytesIO(matching_report_xlsx(report, "ja", lambda u: r.reason(u.reason_code, "ja"))))
    assert ja.sheetnames == ["一致", "不一致"]
    assert [c.value for c in ja["不一致"][1]] == ["クライアント会社ID", "クライアント会社名", "理由コード", "理由"]
    assert [c.value for c in ja["不一致"][2]] == ["cc-2", "グローベックス", "no_match", "同じ名前の取引先が CRM にありません。"]
    en = openpyxl.load_workbook(io.BytesIO(matching_report_xlsx(report, "en", lambda u: r.reason(u.reason_code, "en"))))
    assert en.sheetnames == ["Matched", "Unmatched"]
    assert en["Unmatched"]["D2"].value == "No CRM account has the same name."
    assert r.reason("ambiguous", "ja", {"account_names": ["Initech", "Initech Inc."]}) == (
        "同じ名前の取引先が CRM に複数あるため、どれか一つに決められません（Initech、Initech Inc.）。")
