"""S18 import CRM users into the PM tool as portal users and as client users; nobody is added twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

PROFILE = {"role": "employee", "permissions": ["add_task", "associate_project"]}


async def test_S18_import_crm_users_as_portal_users_and_as_client_users(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        identity_events = await kafka_probe.reader(topics.IDENTITY_EVENTS)
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.crm.upsert_user(id="u-bob", email="bob@example.com", name="Bob", active=True, is_admin=False, locale="en")
        await admin.crm.upsert_user(id="u-cara", email="cara@example.com", name="Cara", active=True, is_admin=False, locale="ja")
        await admin.crm.upsert_user(id="u-dan", email="dan@example.com", name="Dan", active=True, is_admin=False, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        # Bob is already a portal user (e-mails compare case-insensitively).
        await admin.pm.upsert_portal_user(id="pu-bob", portal_id="p-1", email="Bob@Example.com", name="Bob", role="manager")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        await admin.crm.upsert_account(id="a-1", name="Partner Co")
        await stack.quiesce(120)
        portal_users_before = await admin.pm.list("portal_user")

        r1 = await admin.request("hub.users.import", user_ids=["u-bob", "u-cara"], import_as="portal_user")
        await stack.quiesce(120)
        r2 = await admin.request("hub.users.import", user_ids=["u-bob", "u-cara"], import_as="portal_user")  # again
        await stack.quiesce(120)
        portal_users = await admin.pm.list("portal_user")

        [company] = await admin.pm.list("client_company")
        # Dan is already a client user of that company in the PM tool.
        await admin.pm.upsert_client_user(id="cu-dan", portal_id="p-1", client_company_id=company["id"],
                                          email="dan@example.com", name="Dan")
        await stack.quiesce(120)
        r3 = await admin.request("hub.users.import", user_ids=["u-dan", "u-cara"], import_as="client_user",
                                 client_company_id=company["id"])
        await stack.quiesce(120)
        r4 = await admin.request("hub.users.import", user_ids=["u-dan", "u-cara"], import_as="client_user",
                                 client_company_id=company["id"])
        await stack.quiesce(120)
        client_users = await admin.pm.list("client_user")
        records = await kafka_probe.collect(
            identity_events, lambda rs: len(envelopes(rs, "identity.import.completed")) >= 4, settle=1.0)
        mails = await stack.wait_for_mails(5)  # the matching report + one import outcome per import

    outcome_mails = [m for m in mails if "user import finished" in str(m["Subject"]).lower()]
    assert len(outcome_mails) == 4
    assert {m["To"].addresses[0].addr_spec for m in outcome_mails} == {"admin@example.com"}
    bodies = [m.get_body(preferencelist=("plain",)).get_content() for m in outcome_mails]
    [first] = [b for b in bodies if "as portal users" in b and "Imported: 1" in b]  # r1: Cara in, Bob skipped
    assert "Failed: 1" in first and "Bob <bob@example.com>: Already a portal user." in first  # worded from its code
    assert sum("as client users" in b for b in bodies) == 2

    assert [u["id"] for u in portal_users_before] == ["pu-bob"]
    by_email = {u["email"].lower(): u for u in portal_users}
    assert sorted(by_email) == ["bob@example.com", "cara@example.com"]  # Bob not added twice, Cara once
    assert len(portal_users) == 2
    cara = by_email["cara@example.com"]
    assert cara["name"] == "Cara" and cara["active"] is True
    assert cara["role"] == "employee"  # the integration's permission profile (S3)
    assert cara["extra"]["crm_user_id"] == "u-cara"
    assert by_email["bob@example.com"]["id"] == "pu-bob" and by_email["bob@example.com"]["role"] == "manager"

    assert sorted((u["email"], u["client_company_id"]) for u in client_users) == [
        ("cara@example.com", company["id"]), ("dan@example.com", company["id"])]
    assert [u["id"] for u in client_users if u["email"] == "dan@example.com"] == ["cu-dan"]

    by_request = {str(e.payload.request_id): e.payload for e in envelopes(records, "identity.import.completed")}
    imports = [by_request[r["request_id"]] for r in (r1, r2, r3, r4)]
    assert [(i.imported_as, [a.crm_user_id for a in i.added]) for i in imports] == [
        ("portal_user", ["u-cara"]), ("portal_user", []), ("client_user", ["u-cara"]), ("client_user", [])]
    assert {(s.crm_user_id, s.reason_code) for s in imports[0].skipped} == {("u-bob", "already_member")}
    assert {(s.crm_user_id, s.reason_code) for s in imports[3].skipped} == {
        ("u-dan", "already_member"), ("u-cara", "already_member")}
