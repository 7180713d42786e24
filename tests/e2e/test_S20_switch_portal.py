"""S20 switching portal: the old portal's project links go, the new portal's projects are linked."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


def ids(body: dict) -> list[str]:
    return sorted(p["project_id"] for p in body["projects"])


async def test_S20_switching_portal_moves_links_to_the_new_portals_projects(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.crm.upsert_account(id="a-1", name="Acme Corp")
        await admin.crm.upsert_contact(id="c-1", account_id="a-1", first_name="Ann", last_name="Lee", email="ann@acme.test")
        for portal, company, project in (("p-old", "Acme Corp", "pr-old"), ("p-new", "ACME", "pr-new")):
            await admin.pm.upsert_portal(id=portal, name=portal, plan="paid", active=True)
            await admin.pm.upsert_portal_user(id=f"pu-{portal}", portal_id=portal, email="owner@example.com", name="Owner")
            await admin.pm.upsert_client_company(id=f"cc-{portal}", portal_id=portal, name=company)
            await admin.pm.upsert_client_user(id=f"cu-{portal}", portal_id=portal, client_company_id=f"cc-{portal}",
                                              email="Ann@acme.test", name="Ann Lee")
            await admin.pm.upsert_project(id=project, portal_id=portal, name=f"Project {portal}", owner_id=f"pu-{portal}",
                                          client_company_ids=[f"cc-{portal}"], client_user_ids=[f"cu-{portal}"])
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-old", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        key = await stack.new_service_key("org-1")
        account_before = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        contact_before = (await stack.linking_api("/api/v1/records/contact/c-1/projects", key)).json()
        await stack.wait_for_mails(1)

        await admin.request("hub.integration.switch_portal", current_portal_id="p-old", new_portal_id="p-new")
        await stack.quiesce(120)
        account_after = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        contact_after = (await stack.linking_api("/api/v1/records/contact/c-1/projects", key)).json()
        old_records = (await stack.linking_api("/api/v1/projects/pr-old/records", key)).json()
        new_records = (await stack.linking_api("/api/v1/projects/pr-new/records", key)).json()
        projects = {p["id"]: p for p in await admin.pm.list("project")}
        mails = await stack.wait_for_mails(2)

    # Before: the old portal's project is linked to the account and to the contact (matching, S21/S22).
    assert ids(account_before) == ["pr-old"]
    assert ids(contact_before) == ["pr-old"]
    # After: its links are gone; the new portal's project is linked to the same account and contact.
    assert ids(account_after) == ["pr-new"]
    assert [p["portal_id"] for p in account_after["projects"]] == ["p-new"]
    assert ids(contact_after) == ["pr-new"]
    assert old_records["records"] == []
    assert sorted((r["record_type"], r["record_id"]) for r in new_records["records"]) == [("account", "a-1"), ("contact", "c-1")]
    # The PM tool keeps both projects (deactivating a portal's links deletes nothing upstream).
    assert sorted(projects) == ["pr-new", "pr-old"] and not any(p["deleted"] for p in projects.values())
    # One matching report per portal.
    assert [m["To"].addresses[0].addr_spec for m in mails] == ["admin@example.com"] * 2
