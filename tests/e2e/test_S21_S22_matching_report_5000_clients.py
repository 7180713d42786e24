"""S21/S22 at size (issue 15): 5,000 client companies, half with Japanese names, matched on enable.

The report used to travel inside one event, cut to 1,000 + 1,000 rows, and past ≈1,500 clients the event
outgrew the message limit: identity dead-lettered it, `matching_pending` never cleared and the org's new
accounts waited for ever. Now the rows travel in pages: the admin's .xlsx has all 5,000 rows, nothing is
dead-lettered, and a new account gets its client company afterwards.
"""

from __future__ import annotations

import io
from pathlib import Path

import openpyxl
import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]  # 10,000 upstream records through every service

CLIENTS = 5000
MATCHED = 4000  # clients 1..4000 have an account of the same name; the other 1,000 have none
PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


def client_name(i: int) -> str:
    return f"株式会社さくら商事第{i:05d}支店" if i % 2 else f"Northwind Trading {i:05d}"


async def test_S21_S22_report_of_5000_clients_arrives_whole_and_accounts_keep_flowing(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        for start in range(1, CLIENTS + 1, 500):
            chunk = range(start, min(start + 500, CLIENTS + 1))
            await admin.upsert_many("pm", "client_company", [{"id": f"cc-{i:05d}", "portal_id": "p-1", "name": client_name(i)}
                                                             for i in chunk])
            await admin.upsert_many("crm", "account", [{"id": f"a-{i:05d}", "name": client_name(i)}
                                                       for i in chunk if i <= MATCHED])
        await stack.quiesce(900)

        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(900)
        [mail] = await stack.wait_for_mails(1)

        # Accounts keep flowing: a new one gets its client company (identity is not stuck in matching_pending).
        await admin.crm.upsert_account(id="a-new", name="Brand New Ltd")
        await stack.quiesce(120)
        companies = {c["name"] for c in await admin.pm.list("client_company")}
        dead = {}
        for service in ("identity", "linking", "tasks", "notifications"):
            conn = await stack.db(service)
            try:
                dead[service] = await conn.fetchval("SELECT count(*) FROM dead_letter_log")
            finally:
                await conn.close()

    assert dead == {"identity": 0, "linking": 0, "tasks": 0, "notifications": 0}
    assert "Brand New Ltd" in companies
    assert len(companies) == CLIENTS + 1, "no client company created for an account matching paired"
    [attachment] = list(mail.iter_attachments())
    workbook = openpyxl.load_workbook(io.BytesIO(attachment.get_content()), read_only=True)
    assert workbook.sheetnames == ["一致", "不一致"], "the admin reads Japanese: so do the report's sheets"
    matched = [row for row in workbook["一致"].iter_rows(min_row=2, values_only=True)]
    unmatched = [row for row in workbook["不一致"].iter_rows(min_row=2, values_only=True)]
    assert sorted((r[0], r[1], r[2]) for r in matched) == [
        (f"cc-{i:05d}", client_name(i), f"a-{i:05d}") for i in range(1, MATCHED + 1)]
    assert sorted((r[0], r[1], r[2]) for r in unmatched) == [
        (f"cc-{i:05d}", client_name(i), "no_match") for i in range(MATCHED + 1, CLIENTS + 1)]
    assert "4000" in mail["Subject"] and "1000" in mail["Subject"]
