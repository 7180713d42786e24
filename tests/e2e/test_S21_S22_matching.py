"""S21/S22 client <-> account matching on enable: links, and the admin's .xlsx report with reasons."""

from __future__ import annotations

import io
import re
from pathlib import Path

import openpyxl
import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


def ids(body: dict) -> list[str]:
    return sorted(p["project_id"] for p in body["projects"])


async def test_S21_S22_matching_links_clients_projects_and_mails_an_xlsx_report(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        for account_id, name in (("a-1", "Acme Corp"), ("a-2", "Globex Ltd"), ("a-3", "Initech"), ("a-4", "Initech Inc.")):
            await admin.crm.upsert_account(id=account_id, name=name)
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await admin.pm.upsert_portal_user(id="pu-1", portal_id="p-1", email="owner@example.com", name="Owner")
        for company_id, name in (("cc-1", "ACME"), ("cc-2", "Globex"), ("cc-3", "Initech"), ("cc-4", "Umbrella")):
            await admin.pm.upsert_client_company(id=company_id, portal_id="p-1", name=name)
        for project_id, company_id in (("pr-1", "cc-1"), ("pr-2", "cc-1"), ("pr-3", "cc-2"), ("pr-4", "cc-3"), ("pr-5", "cc-4")):
            await admin.pm.upsert_project(id=project_id, portal_id="p-1", name=f"Project {project_id}", owner_id="pu-1",
                                          client_company_ids=[company_id])
        await stack.quiesce(120)
        key = await stack.new_service_key("org-1")
        before = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        assert stack.mails() == []

        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        linked = {a: ids((await stack.linking_api(f"/api/v1/records/account/{a}/projects", key)).json())
                  for a in ("a-1", "a-2", "a-3", "a-4")}
        # A project created later for a matched client is linked to its account too.
        await admin.pm.upsert_project(id="pr-6", portal_id="p-1", name="Later", owner_id="pu-1", client_company_ids=["cc-2"])
        await stack.quiesce(120)
        later = ids((await stack.linking_api("/api/v1/records/account/a-2/projects", key)).json())
        mails = await stack.wait_for_mails(1)

    assert before["projects"] == []  # nothing linked before the integration is enabled
    assert linked == {"a-1": ["pr-1", "pr-2"], "a-2": ["pr-3"], "a-3": [], "a-4": []}
    assert later == ["pr-3", "pr-6"]

    [mail] = mails
    assert mail["To"].addresses[0].addr_spec == "admin@example.com"
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename().endswith(".xlsx")
    assert attachment.get_content_type() == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    book = openpyxl.load_workbook(io.BytesIO(attachment.get_content()))
    assert book.sheetnames == ["Matched", "Unmatched"]
    matched = [tuple(r) for r in book["Matched"].iter_rows(min_row=2, values_only=True)]
    assert sorted(matched) == [("cc-1", "ACME", "a-1", "Acme Corp"), ("cc-2", "Globex", "a-2", "Globex Ltd")]
    unmatched = {r[0]: r for r in book["Unmatched"].iter_rows(min_row=2, values_only=True)}
    assert sorted(unmatched) == ["cc-3", "cc-4"]
    # the reason as a sentence from its code, naming the accounts an ambiguous client could be
    assert unmatched["cc-3"][2:] == ("ambiguous", "Several CRM accounts have the same name (Initech, Initech Inc.), so none was chosen.")
    assert unmatched["cc-4"][2:] == ("no_match", "No CRM account has the same name.")
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Matched: 2" in body and "Unmatched: 2" in body
    assert 'the portal "Portal"' in body  # the portal by its name
    assert re.search(r"Finished at: \w+ \d{1,2}, \d{4}, \d{1,2}:\d\d:\d\d\s[AP]M UTC", body), body
