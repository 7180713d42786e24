"""S14 deal won -> one project, built from the field mapping, linked to the deal and its account."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
MAPPING = [
    {"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"},
    {"pm_field": "end_date", "crm_module": "deals", "crm_field": "Closing_Date"},
    {"pm_field": "description", "crm_module": "accounts", "crm_field": "Account_Name"},
]


async def test_S14_won_deal_creates_exactly_one_linked_project(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=MAPPING, permissions=PROFILE,
                            deal_won_creates_project=True)
        await stack.quiesce(120)
        await admin.crm.upsert_account(id="a-1", name="Acme Corp")
        await admin.crm.upsert_deal(id="d-1", name="Acme rollout", account_id="a-1", closing_date="2027-03-31")
        await admin.crm.upsert_deal(id="d-2", name="Not won", account_id="a-1")
        await stack.quiesce(120)
        assert await admin.pm.list("project") == []  # nothing before the deal is won

        await admin.crm.upsert_deal(id="d-1", stage="Closed Won", won=True)
        await stack.quiesce(120)
        # Won again (an edit of a won deal, then lost and won again): still one project.
        await admin.crm.upsert_deal(id="d-1", amount=1200)
        await admin.crm.upsert_deal(id="d-1", won=False, stage="Negotiation")
        await admin.crm.upsert_deal(id="d-1", won=True, stage="Closed Won")
        await stack.quiesce(120)

        projects = await admin.pm.list("project")
        companies = await admin.pm.list("client_company")
        key = await stack.new_service_key("org-1")
        by_deal = (await stack.linking_api("/api/v1/records/deal/d-1/projects", key)).json()
        by_account = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        by_other_deal = (await stack.linking_api("/api/v1/records/deal/d-2/projects", key)).json()
        records = (await stack.linking_api(f"/api/v1/projects/{projects[0]['id'] if projects else 'none'}/records", key)).json()

    assert len(projects) == 1, projects
    project = projects[0]
    assert project["name"] == "Acme rollout"
    assert project["end_date"] == "2027-03-31"
    assert project["description"] == "Acme Corp"
    assert sorted((r["record_type"], r["record_id"]) for r in project["extra"]["linked_records"]) == [
        ("account", "a-1"), ("deal", "d-1")]
    # S13: the account's client company is the project's client.
    assert [c["name"] for c in companies] == ["Acme Corp"]
    assert project["client_company_ids"] == [companies[0]["id"]]
    # The read API (S2) shows the project on the deal and on its account, and nothing on the other deal.
    assert [(p["project_id"], p["name"]) for p in by_deal["projects"]] == [(project["id"], "Acme rollout")]
    assert [p["project_id"] for p in by_account["projects"]] == [project["id"]]
    assert by_other_deal["projects"] == []
    assert sorted((r["record_type"], r["record_id"]) for r in records["records"]) == [("account", "a-1"), ("deal", "d-1")]
