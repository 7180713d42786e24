"""S6 custom fields of the deals and accounts standard layouts in the field mapping, end to end.

The hub learns a custom field from the records it has seen (crm.deal.upserted /
crm.account.upserted carry `custom_fields`); the mapping may then use it, an unknown
field is refused with a reason naming it, and the custom value ends up in the
project a won deal creates in the PM tool (S14).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
NAME = {"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"}
BUDGET = {"pm_field": "budget_code", "crm_module": "deals", "crm_field": "Budget_Code"}
REGION = {"pm_field": "region", "crm_module": "accounts", "crm_field": "Region_Code"}


async def test_S6_custom_deal_and_account_fields_map_into_the_won_deals_project(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        linking_events = await kafka_probe.reader(topics.LINKING_EVENTS)
        admin = stack.sandbox(acting_user_id="u-admin")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        # The hub sees the custom fields on existing records of both modules.
        await admin.crm.upsert_account(id="a-0", name="Seen Co", custom_fields={"Region_Code": "KINKI"})
        await admin.crm.upsert_deal(id="d-0", name="Seen deal", account_id="a-0", custom_fields={"Budget_Code": "BC-1"})
        await stack.quiesce(120)

        await admin.request("hub.integration.enable", portal_id="p-1", permissions=PROFILE, deal_won_creates_project=True,
                            field_mapping=[NAME, {"pm_field": "budget_code", "crm_module": "deals", "crm_field": "No_Such_Field"}])
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", permissions=PROFILE, deal_won_creates_project=True,
                            field_mapping=[NAME, BUDGET, REGION])
        await stack.quiesce(120)

        await admin.crm.upsert_account(id="a-1", name="Kanto Trading", custom_fields={"Region_Code": "KANTO"})
        await stack.quiesce(120)
        await admin.crm.upsert_deal(id="d-1", name="Big rollout", account_id="a-1", stage="Closed Won", won=True,
                                    custom_fields={"Budget_Code": "BC-42"})
        await stack.quiesce(120)

        records = await kafka_probe.collect(linking_events, lambda rs: bool(envelopes(rs, "linking.link.changed")), settle=1.0)
        projects = await admin.pm.list("project")
        key = await stack.new_service_key("org-1")
        api = (await stack.linking_api("/api/v1/records/deal/d-1/projects", key)).json()

    refusals = [e.payload for e in envelopes(records, "linking.request.refused")]
    assert [r.reason_code for r in refusals] == ["invalid_field_mapping"]
    assert "No_Such_Field" in refusals[0].reason and "unknown field" in refusals[0].reason
    enabled = [e.payload for e in envelopes(records, "linking.integration.changed")]
    assert [e.state for e in enabled] == ["enabled"]
    assert [(m.crm_module, m.crm_field) for m in enabled[0].field_mapping] == [
        ("deals", "Deal_Name"), ("deals", "Budget_Code"), ("accounts", "Region_Code")]

    # The other side: the PM tool holds one project, filled from the deal's and the account's custom fields.
    assert len(projects) == 1, projects
    project = projects[0]
    assert project["name"] == "Big rollout"
    assert project["custom_fields"] == {"budget_code": "BC-42", "region": "KANTO"}
    assert [p["project_id"] for p in api["projects"]] == [project["id"]]
