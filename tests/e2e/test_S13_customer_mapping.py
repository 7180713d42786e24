"""S13 accounts sync as client companies, contacts as client users (through the hub's PM commands)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "employee", "permissions": ["add_task"]}


async def test_S13_accounts_become_client_companies_and_contacts_client_users(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)

        await admin.crm.upsert_account(id="a-1", name="Acme Corp")
        await admin.crm.upsert_account(id="a-2", name="Globex")
        await stack.quiesce(120)
        await admin.crm.upsert_contact(id="c-1", account_id="a-1", first_name="Ann", last_name="Lee", email="ann@acme.test")
        await admin.crm.upsert_contact(id="c-2", account_id="a-1", first_name="Ben", last_name="Kim", email="ben@acme.test")
        await admin.crm.upsert_contact(id="c-3", account_id="a-2", last_name="Cho", email="cho@globex.test")
        await stack.quiesce(120)

        companies = {c["name"]: c for c in await admin.pm.list("client_company")}
        users = {u["email"]: u for u in await admin.pm.list("client_user")}
        assert sorted(companies) == ["Acme Corp", "Globex"]
        assert sorted(users) == ["ann@acme.test", "ben@acme.test", "cho@globex.test"]
        assert users["ann@acme.test"]["name"] == "Ann Lee"
        assert users["ann@acme.test"]["client_company_id"] == companies["Acme Corp"]["id"]
        assert users["ben@acme.test"]["client_company_id"] == companies["Acme Corp"]["id"]
        assert users["cho@globex.test"]["client_company_id"] == companies["Globex"]["id"]
        assert {u["extra"]["crm_record_id"] for u in users.values()} == {"c-1", "c-2", "c-3"}

        # Later changes follow: an account rename, a contact's new e-mail, a contact moving to another account.
        await admin.crm.upsert_account(id="a-1", name="Acme Holdings")
        await admin.crm.upsert_contact(id="c-1", email="ann.lee@acme.test")
        await admin.crm.upsert_contact(id="c-2", account_id="a-2")
        await stack.quiesce(120)
        companies_after = {c["id"]: c for c in await admin.pm.list("client_company")}
        users_after = {u["extra"]["crm_record_id"]: u for u in await admin.pm.list("client_user")}

    assert sorted(c["name"] for c in companies_after.values()) == ["Acme Holdings", "Globex"]
    assert companies_after[companies["Acme Corp"]["id"]]["name"] == "Acme Holdings"  # renamed, not re-created
    assert len(users_after) == 3  # updated in place, none created twice
    assert users_after["c-1"]["email"] == "ann.lee@acme.test"
    assert users_after["c-2"]["client_company_id"] == companies["Globex"]["id"]


async def test_S13_accounts_that_existed_before_enabling_become_client_companies(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await admin.crm.upsert_account(id="a-0", name="Old Co")
        await admin.crm.upsert_contact(id="c-0", account_id="a-0", last_name="Ono", email="ono@old.test")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        companies = await admin.pm.list("client_company")
        users = await admin.pm.list("client_user")

    assert [c["name"] for c in companies] == ["Old Co"]
    assert [(u["email"], u["client_company_id"]) for u in users] == [("ono@old.test", companies[0]["id"])]


async def test_S13_S21_an_account_matched_with_an_existing_client_is_adopted_not_created_twice(
        hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await admin.pm.upsert_client_company(id="cc-acme", portal_id="p-1", name="ACME Inc.")
        await admin.crm.upsert_account(id="a-1", name="Acme")  # linking matches it by normalised name, identity would not
        await admin.crm.upsert_contact(id="c-1", account_id="a-1", last_name="Lee", email="lee@acme.test")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        await admin.crm.upsert_contact(id="c-2", account_id="a-1", last_name="Kim", email="kim@acme.test")
        await stack.quiesce(120)
        companies = await admin.pm.list("client_company")
        users = await admin.pm.list("client_user")

    assert [(c["id"], c["name"]) for c in companies] == [("cc-acme", "ACME Inc.")]  # adopted, no second company
    assert sorted((u["extra"]["crm_record_id"], u["client_company_id"]) for u in users) == [
        ("c-1", "cc-acme"), ("c-2", "cc-acme")]
