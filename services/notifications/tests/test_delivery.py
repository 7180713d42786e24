"""Integration tests of the notification service: real Kafka, PostgreSQL and SMTP server (aiosmtpd sink)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openpyxl
import pytest

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes, free_port, running
from hub_notifications.main import build
from hub_notifications.render import PACKAGED
from hub_devstack.smtp_sink import SmtpSink
from hub_notifications.settings import NotificationsSettings
from hub_schema import make_event, topics
from hub_schema.envelope import Envelope
from hub_schema.events.notifications import (
    MatchedClient,
    MatchingReport,
    MatchingReportPage,
    MatchingReportSummary,
    NotificationPreferencesChange,
    NotificationReportPage,
    NotificationRequested,
    Recipient,
    UnmatchedClient,
)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    s = SmtpSink(tmp_path / "mail", port=free_port())
    s.start()
    yield s
    s.stop()


FAST = {
    "HUB_DELIVERY__QUICK_RETRIES": "2",
    "HUB_DELIVERY__QUICK_RETRY_INITIAL": "0.05",
    "HUB_DELIVERY__QUICK_RETRY_MAX": "0.1",
    "HUB_DELIVERY__RETRY_BASE_SECONDS": "0.2",
    "HUB_DELIVERY__RETRY_MAX_SECONDS": "0.5",
    "HUB_DELIVERY__OUTAGE_BASE_SECONDS": "0.2",
    "HUB_DELIVERY__OUTAGE_MAX_SECONDS": "0.5",
    "HUB_DELIVERY__POLL_SECONDS": "0.2",
    "HUB_SMTP__TIMEOUT": "5",
}


OPERATOR = {"Authorization": "Bearer operator-" + secrets.token_urlsafe(32)}


def settings_for(env: HubEnv, port: int, **extra: str) -> NotificationsSettings:
    return env.settings(NotificationsSettings, "notifications", HUB_SMTP__PORT=str(port), **FAST,
                        HUB_OPERATOR_TOKEN=OPERATOR["Authorization"][7:], **extra)


def request(kind: str, data: dict[str, Any] | None = None, *, locale: str | None = None, optional: bool = False,
            email: str = "taro.yamada@example.co.jp", name: str | None = "山田 太郎",
            report: MatchingReport | None = None, request_id: uuid.UUID | None = None) -> Envelope:
    rid = request_id or uuid.uuid4()
    summary = None
    if report is not None:
        summary = MatchingReportSummary(report_id=uuid.uuid5(rid, "report"), portal_id=report.portal_id,
                                        finished_at=report.finished_at, matched=len(report.matched),
                                        unmatched=len(report.unmatched), pages=len(_cut(report, 3)))
    payload = NotificationRequested(
        request_id=rid, kind=kind, optional=optional,  # type: ignore[arg-type]
        recipient=Recipient(email=email, name=name, locale=locale),  # type: ignore[arg-type]
        data=data or {}, matching_report=summary,
    )
    return make_event(payload, org_id="org-1", entity_key=f"org-1:{rid}", producer="tasks", origin="hub")


def _cut(report: MatchingReport, rows_per_page: int) -> list[list[Any]]:
    rows: list[Any] = [*report.matched, *report.unmatched]
    return [rows[i:i + rows_per_page] for i in range(0, len(rows), rows_per_page)] or [[]]


def report_pages(req: Envelope, report: MatchingReport, rows_per_page: int) -> list[Envelope]:
    """The notification.report_page events a producer sends before `req` (same key)."""
    cut = _cut(report, rows_per_page)
    assert req.payload["matching_report"]["pages"] == len(cut)
    return [make_event(NotificationReportPage(request_id=uuid.UUID(str(req.payload["request_id"])), rows=MatchingReportPage(
        page=n, pages=len(cut), matched=[r for r in rows if isinstance(r, MatchedClient)],
        unmatched=[r for r in rows if isinstance(r, UnmatchedClient)])),
        org_id="org-1", entity_key=req.entity_key, producer="linking", origin="hub")
        for n, rows in enumerate(cut, 1)]


async def wait_mails(sink: SmtpSink, count: int, timeout: float = 30.0) -> list[EmailMessage]:
    """Poll the sink's maildir without blocking the event loop the service runs in."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(sink.files()) < count:
        if loop.time() > deadline:
            raise AssertionError(f"{len(sink.files())} of {count} mails arrived within {timeout}s")
        await asyncio.sleep(0.1)
    return sink.messages()


async def wait_row(service: Any, request_id: uuid.UUID, predicate: Any, timeout: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await service.pool.fetchrow("SELECT * FROM deliveries WHERE request_id = $1", request_id)
        if row is not None and predicate(row):
            return row
        if loop.time() > deadline:
            raise AssertionError(f"delivery {request_id} never matched; last row: {dict(row) if row else None}")
        await asyncio.sleep(0.1)


pytestmark = pytest.mark.integration
DOMAIN = "hub.synchub.local"


def outcomes(records: list[Any]) -> dict[str, list[Any]]:
    by_type: dict[str, list[Any]] = {}
    for e in envelopes(records):
        by_type.setdefault(e.event_type, []).append(e)
    return by_type


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None, "each mail has a plain-text and an HTML part"
    return text.get_content(), html.get_content()


def by_request(mails: list[EmailMessage]) -> dict[str, EmailMessage]:
    return {m["X-Hub-Request-Id"]: m for m in mails}


async def test_S10_S11_S19_failure_mails_in_japanese_by_default_and_english(hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink) -> None:
    s10 = {"task_name": "見積書の送付", "task_id": "pt-42", "parent_task_name": "契約準備", "project_name": "Acme rollout"}
    s11 = {"task_name": "Kick-off call", "task_id": "pt-7", "project_name": "Acme rollout", "requested_due_date": "2024-05-10"}
    s19 = {"email": "info@acme.example", "account_name": "Acme", "contacts": [{"id": "con-1", "name": "Hanako Sato"},
                                                                              {"id": "con-2", "name": "Jiro Sato"}]}
    reqs = {
        "s10_ja": request("subtask_update_failed", s10), "s10_en": request("subtask_update_failed", s10, locale="en"),
        "s11_ja": request("due_date_change_failed", s11), "s11_en": request("due_date_change_failed", s11, locale="en"),
        "s19_ja": request("duplicate_client_emails", s19), "s19_en": request("duplicate_client_emails", s19, locale="en"),
    }
    async with running(build(settings_for(hub_env, sink.port))):
        out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
        for env in reqs.values():
            await kafka_probe.send(env)
        mails = by_request(await wait_mails(sink, 6))
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 6, settle=0.5)
    sent = outcomes(records)["notification.sent"]
    assert {e.payload.request_id for e in sent} == {uuid.UUID(e.payload["request_id"]) for e in reqs.values()}
    assert all(e.envelope.causation_id in {r.event_id for r in reqs.values()} for e in sent)

    def mail(key: str) -> tuple[EmailMessage, str, str]:
        env = reqs[key]
        m = mails[env.payload["request_id"]]
        assert m["Message-ID"] == f"<{env.payload['request_id']}@{DOMAIN}>"
        assert m["To"].addresses[0].addr_spec == "taro.yamada@example.co.jp"
        text, html = parts(m)
        return m, text, html

    m, text, html = mail("s10_ja")
    assert m["Content-Language"] == "ja"
    assert "サブタスク「見積書の送付」を更新できませんでした" in m["Subject"]
    assert "親タスク: 契約準備" in text and "pt-42" not in text and "山田 太郎 様" in text  # names, not ids
    assert "再オープンしてから" in text and "見積書の送付" in html and "<table" in html
    m, text, html = mail("s10_en")
    assert m["Subject"] == '[SyncHub] Subtask "見積書の送付" could not be updated'
    assert 'parent task "契約準備" is closed' in text and "reopen the parent task" in text and "Parent task" in html
    m, text, _ = mail("s11_ja")
    assert "期日を変更できませんでした" in m["Subject"] and "Kick-off call" in m["Subject"]
    assert "スケジュールが固定" in text and "2024年5月10日" in text  # a date as people write it
    m, text, html = mail("s11_en")
    assert "fixed schedule" in text and "unfix the project's schedule" in text and "May 10, 2024" in html
    m, text, _ = mail("s19_ja")
    assert "info@acme.example" in m["Subject"] and re.search(r"^  - Hanako Sato\r?$", text, re.M) and re.search(r"^  - Jiro Sato\r?$", text, re.M)
    assert "con-1" not in text
    m, text, html = mail("s19_en")
    assert "Nothing was created" in text and "info@acme.example" in text and "<li>Hanako Sato</li>" in html


async def test_S21_S22_matching_report_is_attached_as_xlsx(hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink, tmp_path: Path) -> None:
    report = MatchingReport(
        portal_id="portal-1", finished_at=datetime(2024, 4, 1, 9, 0, tzinfo=timezone(timedelta(hours=9))),
        matched=[MatchedClient(client_company_id="cc-1", client_name="Acme", account_id="acc-1", account_name="Acme Corp"),
                 MatchedClient(client_company_id="cc-3", client_name="株式会社テスト", account_id="acc-3", account_name="株式会社テスト")],
        unmatched=[UnmatchedClient(client_company_id="cc-2", client_name="Globex", reason_code="no_match", reason="no account named Globex"),
                   UnmatchedClient(client_company_id="cc-4", client_name="Initech", reason_code="ambiguous",
                                   reason="2 accounts named Initech: acc-8, acc-9")],
    )
    env = request("matching_report", {"portal_name": "acme-projects"}, locale="en", report=report)
    async with running(build(settings_for(hub_env, sink.port))):
        out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
        for page in report_pages(env, report, rows_per_page=3):  # the rows first, on the request's key
            await kafka_probe.send(page)
        await kafka_probe.send(env)
        [m] = await wait_mails(sink, 1)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
    assert outcomes(records)["notification.sent"][0].payload.kind == "matching_report"
    assert "2 matched, 2 unmatched" in m["Subject"]
    text, _ = parts(m)
    assert "Unmatched" in text and "April 1, 2024, 12:00:00\u202fAM UTC" in text  # 09:00+09:00, in the reader's zone
    [att] = list(m.iter_attachments())
    assert att.get_filename() == "matching-report-2024-04-01.xlsx"
    assert att.get_content_type() == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    data = att.get_content()
    wb = openpyxl.load_workbook(io.BytesIO(data))
    assert wb.sheetnames == ["Matched", "Unmatched"]
    matched, unmatched = wb["Matched"], wb["Unmatched"]
    assert [c.value for c in matched[1]] == ["Client company ID", "Client company", "Account ID", "Account"]
    assert matched["A1"].font.b and unmatched["A1"].font.b
    assert matched.column_dimensions["B"].width > 20
    assert [[c.value for c in row] for row in matched.iter_rows(min_row=2)] == [
        ["cc-1", "Acme", "acc-1", "Acme Corp"], ["cc-3", "株式会社テスト", "acc-3", "株式会社テスト"]]
    assert [[c.value for c in row] for row in unmatched.iter_rows(min_row=2)] == [
        ["cc-2", "Globex", "no_match", "No CRM account has the same name."],
        ["cc-4", "Initech", "ambiguous", "Several CRM accounts have the same name, so none was chosen."]]
    (tmp_path / "report.xlsx").write_bytes(data)


async def test_duplicate_request_sends_one_mail(hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink) -> None:
    data = {"task_name": "Kick-off call"}
    first = request("task_update_failed", data)
    again = request("task_update_failed", data, request_id=uuid.UUID(first.payload["request_id"]))  # new event id
    marker = request("task_update_failed", {"task_name": "marker"})
    async with running(build(settings_for(hub_env, sink.port))):
        out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
        await kafka_probe.send(first)
        await wait_mails(sink, 1)
        await kafka_probe.send(first)  # redelivered event: absorbed by the inbox
        await kafka_probe.send(again)  # same request re-announced: the delivery log absorbs it
        await kafka_probe.send(marker)
        await wait_mails(sink, 2)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 3, settle=1.5)
        await asyncio.sleep(1.0)
    mails = sink.messages()
    assert len(mails) == 2
    assert sorted(m["X-Hub-Request-Id"] for m in mails) == sorted([first.payload["request_id"], marker.payload["request_id"]])
    got = outcomes(records)
    assert len(got["notification.sent"]) == 2
    [dup] = got["notification.suppressed"]
    assert dup.payload.reason_code == "duplicate" and str(dup.payload.request_id) == first.payload["request_id"]


async def test_smtp_outage_keeps_mail_pending_and_sends_it_when_the_server_returns(hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink) -> None:
    sink.stop()  # the mail server is down
    env = request("subtask_update_failed", {"task_name": "Draft contract"})
    rid = uuid.UUID(env.payload["request_id"])
    async with running(build(settings_for(hub_env, sink.port))) as service:
        out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
        await kafka_probe.send(env)
        row = await wait_row(service, rid, lambda r: r["deferrals"] >= 2)
        assert row["state"] in ("pending", "sending") and row["attempts"] == 0, "an outage uses up no attempts"
        assert "Connect" in row["last_error"] or "refused" in row["last_error"].lower()
        follow = request("subtask_update_failed", {"task_name": "Second, queued during the outage"})
        await kafka_probe.send(follow)
        await wait_row(service, uuid.UUID(follow.payload["request_id"]), lambda r: r["state"] in ("pending", "sending"))
        assert sink.files() == []
        sink.start()  # the server is back
        mails = await wait_mails(sink, 2)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 2)
        row = await wait_row(service, rid, lambda r: r["state"] == "sent")
    assert {m["X-Hub-Request-Id"] for m in mails} == {env.payload["request_id"], follow.payload["request_id"]}
    assert {e.event_type for e in envelopes(records)} == {"notification.sent"}
    assert row["attempts"] == 1 and row["resent_after_crash"] == 0


async def test_retry_limit_reached_marks_failed_and_publishes_failure_then_operator_retry_sends(
        hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink) -> None:
    sink.refuse = True  # 451 to every mail
    env = request("due_date_change_failed", {"task_name": "Kick-off call"})
    rid = uuid.UUID(env.payload["request_id"])
    service = build(settings_for(hub_env, sink.port, HUB_DELIVERY__MAX_ATTEMPTS="3"))
    async with running(service):
        out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
        await kafka_probe.send(env)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
        [failed] = envelopes(records, "notification.failed")
        assert failed.payload.attempts == 3 and "451" in failed.payload.error
        assert failed.envelope.causation_id == env.event_id and failed.envelope.correlation_id == env.correlation_id
        row = await wait_row(service, rid, lambda r: r["state"] == "failed")
        assert row["attempts"] == 3 and sink.files() == []
        sink.refuse = False
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http_app()),
                                     base_url="http://t", headers=OPERATOR) as http:
            assert (await http.post(f"/api/v1/deliveries/{rid}/retry")).status_code == 202
            [m] = await wait_mails(sink, 1)
            await wait_row(service, rid, lambda r: r["state"] == "sent")
            log = (await http.get("/api/v1/deliveries", params={"request_id": str(rid)})).json()["deliveries"]
            by_recipient = (await http.get("/api/v1/deliveries", params={"recipient": "Taro.Yamada@example.co.jp"})).json()
        records = await kafka_probe.collect(out, lambda rs: len(envelopes(rs, "notification.sent")) >= 1)
    assert m["Message-ID"] == f"<{rid}@{DOMAIN}>"
    assert log[0]["state"] == "sent" and log[0]["message_id"] == f"<{rid}@{DOMAIN}>"
    assert [d["request_id"] for d in by_recipient["deliveries"]] == [str(rid)]


async def test_bad_requests_are_dead_lettered_with_the_reason(hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(PACKAGED / "ja", templates / "ja")  # an operator's tree without English templates
    bad_address = request("task_update_failed", {"task_name": "x"}, email="taro..yamada@example.com")
    no_template = request("task_update_failed", {"task_name": "x"}, locale="en")
    missing_data = request("subtask_update_failed", {"project_name": "no task named"})
    good = request("task_update_failed", {"task_name": "still flowing"})
    report = MatchingReport(portal_id="portal-1", finished_at=datetime(2024, 4, 1, tzinfo=timezone.utc), matched=[],
                            unmatched=[UnmatchedClient(client_company_id=f"cc-{i}", client_name=f"Client {i}",
                                                       reason_code="no_match", reason="no account") for i in range(4)])
    pages_missing = request("matching_report", {}, locale="ja", report=report)
    async with running(build(settings_for(hub_env, sink.port, HUB_TEMPLATES_DIR=str(templates)))):
        dlq = await kafka_probe.reader(topics.DEAD_LETTERS)
        await kafka_probe.send(report_pages(pages_missing, report, rows_per_page=3)[0])  # page 1 of 2 only
        for env in (bad_address, no_template, missing_data, pages_missing, good):
            await kafka_probe.send(env)
        dead = await kafka_probe.collect(dlq, lambda rs: len(rs) >= 4, settle=1.0)
        [m] = await wait_mails(sink, 1)
    assert m["X-Hub-Request-Id"] == good.payload["request_id"]
    reasons = {dict(r.headers)["x-dlq-code"].decode(): dict(r.headers)["x-dlq-reason"].decode() for r in dead}
    assert set(reasons) == {"invalid_address", "unknown_template", "invalid_template_data", "report_incomplete"}
    assert "1 of 2 pages" in reasons["report_incomplete"]
    assert "taro..yamada" not in reasons["invalid_address"] and "dot" in reasons["invalid_address"]  # no address in reasons
    assert "task_update_failed" in reasons["unknown_template"] and "'en'" in reasons["unknown_template"]
    assert "task_name" in reasons["invalid_template_data"]
    assert all(dict(r.headers)["x-dlq-consumer"] == b"notifications" for r in dead)


async def test_opt_out_suppresses_optional_kinds_only(hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink) -> None:
    email = "hanako@acme.example"
    t0 = datetime(2024, 4, 1, tzinfo=timezone.utc)
    opt_out = make_event(NotificationPreferencesChange(
        request_id=uuid.uuid4(), acting_user_id="u-2", email="Hanako@Acme.example", kinds=["import_outcome"],
        opted_out=True, changed_at=t0), org_id="org-1", entity_key="org:org-1", producer="crm-ui", origin="crm")
    stale = make_event(NotificationPreferencesChange(
        request_id=uuid.uuid4(), acting_user_id="u-2", email=email, kinds=["import_outcome"],
        opted_out=False, changed_at=t0 - timedelta(hours=1)), org_id="org-1", entity_key="org:org-1", producer="crm-ui", origin="crm")
    report = request("import_outcome", {"imported": 3}, optional=True, email=email)
    failure = request("subtask_update_failed", {"task_name": "must arrive"}, optional=True, email=email)
    service = build(settings_for(hub_env, sink.port))
    async with running(service):
        out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
        await kafka_probe.send(opt_out)
        await kafka_probe.send(stale)  # older than the opt-out: ignored
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http_app()),
                                     base_url="http://t", headers=OPERATOR) as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (await http.get(f"/api/v1/orgs/org-1/preferences/{email}")).json()["opted_out"] != ["import_outcome"]:
                assert loop.time() < deadline, "the preference change was never applied"
                await asyncio.sleep(0.2)
            refused = await http.put(f"/api/v1/orgs/org-1/preferences/{email}", json={"opted_out": ["subtask_update_failed"]})
            assert refused.status_code == 422 and "subtask_update_failed" in refused.json()["detail"]
            await asyncio.sleep(1.0)  # the stale change has been consumed by now
            assert (await http.get(f"/api/v1/orgs/org-1/preferences/{email}")).json()["opted_out"] == ["import_outcome"]
        await kafka_probe.send(report)
        await kafka_probe.send(failure)
        [m] = await wait_mails(sink, 1)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 2, settle=1.0)
    assert m["X-Hub-Request-Id"] == failure.payload["request_id"]
    got = outcomes(records)
    [suppressed] = got["notification.suppressed"]
    assert suppressed.payload.reason_code == "opted_out" and str(suppressed.payload.request_id) == report.payload["request_id"]
    assert [str(e.payload.request_id) for e in got["notification.sent"]] == [failure.payload["request_id"]]
    assert len(sink.files()) == 1


def _spawn(env: HubEnv, port: int, failpoint: str = "") -> subprocess.Popen[bytes]:
    proc_env = {**os.environ, **env.env("notifications"), **FAST, "HUB_SMTP__PORT": str(port),
                "HUB_DELIVERY__LEASE_SECONDS": "2", "HUB_FAILPOINT": failpoint}
    return subprocess.Popen([sys.executable, "-m", "hub_notifications.main"], env=proc_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_crash_after_smtp_accept_resends_with_same_message_id_and_counts_it(
        hub_env: HubEnv, kafka_probe: KafkaProbe, sink: SmtpSink) -> None:
    env = request("task_create_refused", {"task_name": "Kick-off call"})
    rid = uuid.UUID(env.payload["request_id"])
    proc = _spawn(hub_env, sink.port, "notifications.after_smtp_accept")
    out = await kafka_probe.reader(topics.NOTIFICATION_OUTCOMES)
    await kafka_probe.send(env)
    rc = await asyncio.to_thread(proc.wait, 90)
    assert rc == -signal.SIGKILL, "the failpoint killed the sender after the server accepted the mail"
    assert len(sink.files()) == 1
    restarted = _spawn(hub_env, sink.port)
    try:
        mails = await wait_mails(sink, 2, timeout=60)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 1, timeout=60, settle=1.0)
    finally:
        restarted.terminate()
        await asyncio.to_thread(restarted.wait, 30)
    assert {m["Message-ID"] for m in mails} == {f"<{rid}@{DOMAIN}>"}, "the re-sent copy carries the same Message-ID"
    [sent] = envelopes(records, "notification.sent")
    assert sent.payload.request_id == rid
    base, _, _ = hub_env.admin_dsn.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{hub_env.database}")
    try:
        row = await conn.fetchrow("SELECT state, resent_after_crash FROM notifications.deliveries WHERE request_id = $1", rid)
    finally:
        await conn.close()
    assert row["state"] == "sent" and row["resent_after_crash"] == 1
