"""S8 trial and free CRM editions may integrate: enabling succeeds and the sync runs for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

PROFILE = {"role": "employee", "permissions": ["add_task"]}


@pytest.mark.parametrize("edition", ["trial", "free"])
async def test_S8_trial_and_free_editions_can_enable_the_integration(
        edition: str, hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    org = f"org-{edition}"
    async with hub_stack(hub_env, tmp_path) as stack:
        linking_events = await kafka_probe.reader(topics.LINKING_EVENTS)
        admin = stack.sandbox(org_id=org, acting_user_id="u-admin")
        await admin.crm.upsert_org(id=org, name=f"{edition} org", edition=edition)
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        await admin.crm.upsert_account(id="a-1", name="Edition Co")
        await stack.quiesce(120)
        records = await kafka_probe.collect(linking_events, lambda rs: bool(envelopes(rs, "linking.integration.changed")), settle=1.0)
        companies = await admin.pm.list("client_company")
        mails = await stack.wait_for_mails(1)

    assert envelopes(records, "linking.request.refused") == []
    enabled = envelopes(records, "linking.integration.changed")
    assert [(e.org_id, e.payload.state, e.payload.portal_id) for e in enabled] == [(org, "enabled", "p-1")]
    # The sync really runs for this edition: the account is a client company in the PM tool.
    assert [c["name"] for c in companies] == ["Edition Co"]
    # ... and the admin got the matching report of the first enable (S21/S22).
    assert [m["To"].addresses[0].addr_spec for m in mails] == ["admin@example.com"]
    assert [part.get_filename() for part in mails[0].iter_attachments()][0].endswith(".xlsx")
