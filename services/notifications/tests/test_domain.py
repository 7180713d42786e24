"""Unit tests of the pure rules (no I/O)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import openpyxl
import io
import pytest

from hub_notifications import domain
from hub_notifications.render import Renderer, TemplateDataError, TemplateMissing
from hub_notifications.report import matching_report_xlsx
from hub_schema.events.notifications import MatchedClient, MatchingReport, NotificationKind, UnmatchedClient


def test_failure_kinds_can_never_be_suppressed() -> None:
    for kind in ("subtask_update_failed", "due_date_change_failed", "duplicate_client_emails"):
        assert kind in domain.MANDATORY_KINDS
        assert not domain.is_suppressible(kind, optional_flag=True)
    assert domain.is_suppressible("import_outcome", optional_flag=True)
    assert not domain.is_suppressible("import_outcome", optional_flag=False)


def test_locale_defaults_to_japanese() -> None:
    assert domain.pick_locale(None, "ja") == "ja"
    assert domain.pick_locale("en", "ja") == "en"
    assert domain.pick_locale("fr", "ja") == "ja"


@pytest.mark.parametrize("address", ["taro..yamada@example.com", ".taro@example.com", "taro@exa_mple.com",
                                     "taro@-example.com", "taro@example.123", "a" * 65 + "@example.com",
                                     "taro(x)@example.com"])
def test_undeliverable_addresses_are_named(address: str) -> None:
    assert domain.address_problem(address)


@pytest.mark.parametrize("address", ["taro.yamada@example.co.jp", "t+tag@sub.example.com", "hanako@例え.jp"])
def test_deliverable_addresses_pass(address: str) -> None:
    assert domain.address_problem(address) is None


def test_message_id_is_stable_per_request() -> None:
    rid = uuid.uuid4()
    assert domain.message_id(rid, "hub.example") == domain.message_id(rid, "hub.example") == f"<{rid}@hub.example>"


def test_smtp_error_classes() -> None:
    assert domain.classify_smtp_error(None, reached_server=False) == "outage"
    assert domain.classify_smtp_error(421, reached_server=True) == "outage"
    assert domain.classify_smtp_error(535, reached_server=True, during_auth=True) == "outage"
    assert domain.classify_smtp_error(451, reached_server=True) == "transient"
    assert domain.classify_smtp_error(550, reached_server=True) == "permanent"


def test_retry_delay_grows_is_jittered_and_capped() -> None:
    assert domain.retry_delay(1, 10, 1000, 0.0) == 5
    assert domain.retry_delay(1, 10, 1000, 0.999) < 10
    assert domain.retry_delay(3, 10, 1000, 0.0) == 20
    assert domain.retry_delay(30, 10, 1000, 0.999) <= 1000
    assert domain.gives_up(3, 3) and not domain.gives_up(2, 3)


def test_display_name_cannot_inject_headers() -> None:
    assert domain.clean_display_name("Taro\r\nBcc: x@evil.example") == "Taro Bcc: x@evil.example"


def test_every_kind_has_templates_in_both_locales() -> None:
    r = Renderer()
    for kind in NotificationKind.__args__:  # type: ignore[attr-defined]
        for locale in ("ja", "en"):
            assert r.has(kind, locale), (kind, locale)


def test_template_needs_its_data() -> None:
    r = Renderer()
    ctx = {"kind": "k", "locale": "ja", "request_id": "r", "org_id": "o", "recipient": {}, "recipient_name": "", "report": None}
    with pytest.raises(TemplateDataError, match="task_name"):
        r.render("subtask_update_failed", "ja", {**ctx, "data": {}})
    with pytest.raises(TemplateMissing):
        r.render("subtask_update_failed", "fr", {**ctx, "data": {"task_name": "x"}})


def test_html_part_escapes_upstream_data() -> None:
    r = Renderer()
    ctx = {"kind": "k", "locale": "en", "request_id": "r", "org_id": "o", "recipient": {}, "recipient_name": "", "report": None}
    out = r.render("task_update_failed", "en", {**ctx, "data": {"task_name": "<script>x</script>"}})
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "<script>x</script>" in out.text


def test_report_workbook_is_deterministic_and_readable() -> None:
    report = MatchingReport(
        portal_id="p", finished_at=datetime(2024, 4, 1, tzinfo=timezone.utc),
        matched=[MatchedClient(client_company_id="cc-1", client_name="Acme", account_id="acc-1", account_name="Acme")],
        unmatched=[UnmatchedClient(client_company_id="cc-2", client_name="=HYPERLINK(\"x\")", reason_code="error",
                                   reason="upstream timeout")],
    )
    data = matching_report_xlsx(report, "en")
    assert data == matching_report_xlsx(report, "en")
    wb = openpyxl.load_workbook(io.BytesIO(data))
    assert wb["Unmatched"]["B2"].value == '=HYPERLINK("x")'  # a string, never a formula
    assert wb["Unmatched"]["B2"].data_type == "s"


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_S19_duplicate_emails_mail_reads_right_for_a_user_import_and_for_a_project(locale: str) -> None:
    r = Renderer()
    ctx = {"kind": "duplicate_client_emails", "locale": locale, "request_id": "r", "org_id": "o", "recipient": {},
           "recipient_name": "", "report": None}
    base = {"email": "eve@example.com", "contacts": [{"id": "u-eve", "name": "Eve"}]}
    old = r.render("duplicate_client_emails", locale, {**ctx, "data": base})  # requests from before `cause`
    project = r.render("duplicate_client_emails", locale, {**ctx, "data": {**base, "cause": "project_creation"}})
    imported = r.render("duplicate_client_emails", locale, {**ctx, "data": {**base, "cause": "user_import"}})
    assert (old.subject, old.text, old.html) == (project.subject, project.text, project.html)
    project_words = {"en": "Creating a project", "ja": "プロジェクト作成"}[locale]
    import_words = {"en": "Importing CRM users", "ja": "インポートは"}[locale]
    assert project_words in project.text and import_words not in project.text
    assert import_words in imported.text and project_words not in imported.text
    assert import_words in imported.html
    assert "  - Eve\n" in imported.text and "u-eve" not in imported.text  # people by name, not id
    assert "eve@example.com" in imported.subject
    assert imported.subject != project.subject
