"""S19 duplicate e-mails: a project from an account whose contacts share an address fails as a whole.

The refusal names the contacts and the address, the acting user is e-mailed, and the
PM tool holds nothing of the attempt (no project, group, client company or client user).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


async def test_S19_project_from_account_with_shared_contact_email_fails_whole_and_tells_the_user(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        linking_events = await kafka_probe.reader(topics.LINKING_EVENTS)
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await admin.crm.upsert_account(id="a-1", name="Acme Corp")
        await admin.crm.upsert_contact(id="c-1", account_id="a-1", first_name="Ann", last_name="Lee", email="shared@acme.test")
        await admin.crm.upsert_contact(id="c-2", account_id="a-1", first_name="Anna", last_name="Park", email="Shared@Acme.test")
        await admin.crm.upsert_contact(id="c-3", account_id="a-1", first_name="Carl", last_name="Ng", email="carl@acme.test")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        await stack.wait_for_mails(1)  # the matching report of the first enable
        before = {kind: await admin.pm.list(kind) for kind in ("project", "project_group", "client_company", "client_user")}

        await admin.request("hub.project.create_from_record", record_type="account", record_id="a-1", name="Acme onboarding",
                            new_group_name="Onboarding")
        await stack.quiesce(120)
        mails = await stack.wait_for_mails(2)
        after = {kind: await admin.pm.list(kind) for kind in ("project", "project_group", "client_company", "client_user")}
        key = await stack.new_service_key("org-1")
        api = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        records = await kafka_probe.collect(linking_events, lambda rs: bool(envelopes(rs, "linking.request.refused")), settle=1.0)
        log = await admin.log()

    refusals = [e.payload for e in envelopes(records, "linking.request.refused")]
    assert [(r.request_type, r.reason_code) for r in refusals] == [("hub.project.create_from_record", "duplicate_email")]
    reason = refusals[0].reason
    assert "shared@acme.test" in reason and "c-1" in reason and "c-2" in reason and "c-3" not in reason

    # Nothing half-created on the PM side, and no command was even sent for it.
    assert after == before
    assert before["project"] == [] and before["project_group"] == []
    assert not [m for m in log if "pm.project.create" in str(m)]
    assert api["projects"] == []

    [mail] = [m for m in mails if "matching" not in str(m["Subject"]).lower()]
    assert mail["To"].addresses[0].addr_spec == "admin@example.com"
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "shared@acme.test" in body.lower()
    assert "Ann Lee" in body and "Anna Park" in body  # the contacts by name ...
    assert not re.search(r"\bc-[12]\b", body)  # ... not by id


async def test_S19_importing_users_as_client_users_with_a_taken_address_fails_whole_and_tells_the_user(
        hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.crm.upsert_user(id="u-eve", email="eve@example.com", name="Eve", active=True, is_admin=False, locale="en")
        await admin.crm.upsert_user(id="u-fay", email="fay@example.com", name="Fay", active=True, is_admin=False, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await admin.pm.upsert_client_company(id="cc-other", portal_id="p-1", name="Other Co")
        await admin.pm.upsert_client_company(id="cc-1", portal_id="p-1", name="Target Co")
        await admin.pm.upsert_client_user(id="cu-eve", portal_id="p-1", client_company_id="cc-other",
                                          email="EVE@example.com", name="Eve elsewhere")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        await stack.wait_for_mails(1)  # the matching report
        before = await admin.pm.list("client_user")

        await admin.request("hub.users.import", user_ids=["u-eve", "u-fay"], import_as="client_user", client_company_id="cc-1")
        await stack.quiesce(120)
        mails = await stack.wait_for_mails(2)
        after = await admin.pm.list("client_user")

    assert after == before  # Fay is not added either: all or nothing
    [mail] = [m for m in mails if "matching" not in str(m["Subject"]).lower()]
    assert mail["To"].addresses[0].addr_spec == "admin@example.com"
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "eve@example.com" in body.lower()
    # who is concerned and who already holds the address, by name, not by id
    assert "  - Eve\r\n" in body or "  - Eve\n" in body
    assert "Client user already using the address: Eve elsewhere" in body
    assert "u-eve" not in body and "cu-eve" not in body
