"""S3, S17, S23: a refused set-up or permission change changes nothing anywhere (issue 14).

The org is enabled so that CRM users may only add tasks. Then the admin tries to enable a free-plan
portal with broader permissions (S17 refuses it), to switch to that portal (refused), an employee tries
to enable the paid portal with broader permissions and to change the permissions himself (refused,
not an admin). Afterwards every service's tables are exactly as before, no one's access was re-stated,
and the employee still may not associate a project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

ONLY_ADD_TASKS = {"role": "contractor", "permissions": ["add_task"]}
BROADER = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
PLATFORM_TABLES = {"inbox", "outbox", "dead_letter_log", "schema_migrations"}


async def service_state(stack: HubStack) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every row of every service's own tables (the platform's inbox/outbox bookkeeping aside)."""
    state: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for service in ("identity", "linking", "tasks", "notifications"):
        conn = await stack.db(service)
        try:
            tables = [r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_type = 'BASE TABLE' ORDER BY table_name")]
            state[service] = {
                t: sorted((dict(r) for r in await conn.fetch(f'SELECT * FROM "{t}"')), key=repr)
                for t in tables if t not in PLATFORM_TABLES}
        finally:
            await conn.close()
    return state


async def test_S3_S17_S23_refused_enable_switch_and_permission_change_leave_everything_as_it_was(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = stack.sandbox(acting_user_id="u-admin")
        bob = stack.sandbox(acting_user_id="u-bob")
        await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="en")
        await admin.crm.upsert_user(id="u-bob", email="bob@example.com", name="Bob", active=True, is_admin=False, locale="en")
        await admin.crm.upsert_account(id="a-1", name="Acme Corp")
        await admin.pm.upsert_portal(id="p-paid", name="Paid portal", plan="paid", active=True)
        await admin.pm.upsert_portal(id="p-free", name="Free portal", plan="free", active=True)
        for portal in ("p-paid", "p-free"):
            await admin.pm.upsert_portal_user(id=f"pu-bob-{portal}", portal_id=portal, email="bob@example.com", name="Bob")
            await admin.pm.upsert_project(id=f"pr-{portal}", portal_id=portal, name="Bob's project",
                                          owner_id=f"pu-bob-{portal}")
        await stack.quiesce(120)
        await admin.request("hub.integration.enable", portal_id="p-paid", field_mapping=[], permissions=ONLY_ADD_TASKS,
                            deal_won_creates_project=False)
        await stack.quiesce(120)
        before = await service_state(stack)
        pm_users_before = await admin.pm.list("portal_user")
        events = await kafka_probe.reader(topics.IDENTITY_EVENTS, topics.LINKING_EVENTS, topics.PM_COMMANDS,
                                          topics.NOTIFICATION_REQUESTS)

        refused = [
            await admin.request("hub.integration.enable", portal_id="p-free", field_mapping=[], permissions=BROADER,
                                deal_won_creates_project=True),
            await admin.request("hub.integration.switch_portal", current_portal_id="p-paid", new_portal_id="p-free"),
            await bob.request("hub.integration.enable", portal_id="p-paid", field_mapping=[], permissions=BROADER,
                              deal_won_creates_project=False),
            await bob.request("hub.permissions.change", permissions=BROADER),
        ]
        await stack.quiesce(120)
        after = await service_state(stack)
        pm_users_after = await admin.pm.list("portal_user")

        # What the refused requests would have allowed: Bob associating his project.
        refused.append(await bob.request("hub.project.associate", record_type="account", record_id="a-1",
                                         project_id="pr-p-paid"))
        await stack.quiesce(120)
        caused = {r["event_id"]: r["event_type"] for r in refused}
        records = await kafka_probe.collect(
            events, lambda rs: len([e for e in envelopes(rs) if str(e.envelope.causation_id) in caused]) >= 5, settle=1.0)

    answers = [(caused[str(e.envelope.causation_id)], e.event_type, getattr(e.payload, "reason_code", None))
               for e in envelopes(records) if str(e.envelope.causation_id) in caused]
    # Each refused request got its refusal and nothing else: no profile, access, link, command or integration change.
    assert sorted(answers) == sorted([
        ("hub.integration.enable", "linking.request.refused", "plan_required"),
        ("hub.integration.switch_portal", "linking.request.refused", "plan_required"),
        ("hub.integration.enable", "linking.request.refused", "not_admin"),
        ("hub.permissions.change", "identity.request.refused", "not_admin"),
        ("hub.project.associate", "linking.request.refused", "permission_denied"),
    ])
    for service in before:
        assert after[service] == before[service], f"{service} changed after refused requests"
    assert pm_users_after == pm_users_before
    profiles = before["identity"]["permission_profiles"]
    assert [(p["role"], list(p["permissions"])) for p in profiles] == [("contractor", ["add_task"])]
