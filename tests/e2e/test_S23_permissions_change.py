"""S23 the permissions CRM users get in the PM tool can change later; the change applies from then on."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

MAY_ASSOCIATE = {"role": "manager", "permissions": ["add_task", "associate_project"]}
MAY_NOT = {"role": "contractor", "permissions": ["add_task"]}


async def test_S23_changed_permissions_apply_from_then_on_without_rewriting_history(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        linking_events = await kafka_probe.reader(topics.LINKING_EVENTS)
        admin = stack.sandbox(acting_user_id="u-admin")
        bob = stack.sandbox(acting_user_id="u-bob")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.crm.upsert_user(id="u-bob", email="bob@example.com", name="Bob", active=True, is_admin=False, locale="en")
        await admin.crm.upsert_user(id="u-cara", email="cara@example.com", name="Cara", active=True, is_admin=False, locale="en")
        await admin.crm.upsert_account(id="a-1", name="Acme Corp")
        await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
        await admin.pm.upsert_portal_user(id="pu-bob", portal_id="p-1", email="bob@example.com", name="Bob")
        for project_id in ("pr-1", "pr-2", "pr-3"):
            await admin.pm.upsert_project(id=project_id, portal_id="p-1", name=f"Project {project_id}", owner_id="pu-bob")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=MAY_ASSOCIATE,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        key = await stack.new_service_key("org-1")

        await bob.request("hub.project.associate", record_type="account", record_id="a-1", project_id="pr-1")
        await stack.quiesce(120)
        allowed = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()

        # Bob tries to change them himself: refused, nothing changes.
        await bob.request("hub.permissions.change", permissions={"role": "admin", "permissions": ["associate_project"]})
        await admin.request("hub.permissions.change", permissions=MAY_NOT)
        await stack.quiesce(120)
        await bob.request("hub.project.associate", record_type="account", record_id="a-1", project_id="pr-2")
        await admin.request("hub.users.import", user_ids=["u-cara"], import_as="portal_user")
        await stack.quiesce(120)
        refused = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        cara = [u for u in await admin.pm.list("portal_user") if u["email"] == "cara@example.com"]

        # ... and the reverse: given the permission again, Bob may associate again.
        await admin.request("hub.permissions.change", permissions=MAY_ASSOCIATE)
        await stack.quiesce(120)
        await bob.request("hub.project.associate", record_type="account", record_id="a-1", project_id="pr-3")
        await stack.quiesce(120)
        allowed_again = (await stack.linking_api("/api/v1/records/account/a-1/projects", key)).json()
        records = await kafka_probe.collect(linking_events, lambda rs: bool(envelopes(rs, "linking.request.refused")), settle=1.0)

    assert [p["project_id"] for p in allowed["projects"]] == ["pr-1"]
    # After the change: refused, and the earlier link stays (history is not rewritten).
    assert [p["project_id"] for p in refused["projects"]] == ["pr-1"]
    refusals = [e.payload for e in envelopes(records, "linking.request.refused")]
    assert [(r.request_type, r.acting_user_id, r.reason_code) for r in refusals] == [
        ("hub.project.associate", "u-bob", "permission_denied")]
    # A user imported after the change gets the new profile in the PM tool.
    assert [(u["role"], u["extra"]["permissions"]) for u in cara] == [("contractor", ["add_task"])]
    assert [p["project_id"] for p in allowed_again["projects"]] == ["pr-1", "pr-3"]
