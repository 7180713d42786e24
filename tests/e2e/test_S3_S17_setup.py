"""S3 set-up and S17 plan check, end to end: sandbox CRM/PM -> identity -> linking, on the real stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


async def test_S3_S17_admin_enables_with_paid_portal_after_free_portal_is_refused(hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        linking_events = await kafka_probe.reader(topics.LINKING_EVENTS)
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="Admin@Example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.crm.upsert_user(id="u-bob", email="bob@example.com", name="Bob", active=True, is_admin=False, locale="ja")
        await admin.pm.upsert_portal(id="p-free", name="Free portal", plan="free", active=True)
        await admin.pm.upsert_portal(id="p-paid", name="Paid portal", plan="paid", active=True)
        await stack.quiesce()

        await admin.request("hub.integration.enable", portal_id="p-free", field_mapping=[], permissions=PROFILE, deal_won_creates_project=False)
        await stack.sandbox(acting_user_id="u-bob").request(
            "hub.integration.enable", portal_id="p-paid", field_mapping=[], permissions=PROFILE, deal_won_creates_project=False)
        await stack.quiesce()
        await admin.request("hub.integration.enable", portal_id="p-paid", field_mapping=[], permissions=PROFILE, deal_won_creates_project=False)
        await stack.quiesce()

        records = await kafka_probe.collect(linking_events, lambda rs: bool(envelopes(rs, "linking.integration.changed")), settle=1.0)
    refusals = [e.payload for e in envelopes(records, "linking.request.refused")]
    assert [r.reason_code for r in refusals] == ["plan_required", "not_admin"]
    assert "paid" in refusals[0].reason.lower()
    enabled = [e.payload for e in envelopes(records, "linking.integration.changed")]
    assert [(e.state, e.portal_id, e.changed_by) for e in enabled] == [("enabled", "p-paid", "u-admin")]
