"""S12 CRM tasks -> PM, end to end: created in the linked project when the user may add tasks;
otherwise refused with a reason the CRM side can show (tasks.events) and an e-mail to the user."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

WITH_ADD_TASK = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
WITHOUT_ADD_TASK = {"role": "manager", "permissions": ["edit_project", "associate_project"]}
SETTLE = 120.0


async def linked_world(stack: HubStack) -> Any:
    """acc-1 (and its contact, and a deal) linked to prj-1; acc-2 has no linked project."""
    admin = stack.sandbox(acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
    await admin.crm.upsert_user(id="u-eve", email="eve@example.com", name="Eve", active=True, is_admin=False, locale="en")
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-admin", portal_id="p-1", email="admin@example.com", name="Ada", role="admin")
    await admin.pm.upsert_portal_user(id="pu-eve", portal_id="p-1", email="eve@example.com", name="Eve")
    await admin.crm.upsert_account(id="acc-1", name="Acme")
    await admin.crm.upsert_account(id="acc-2", name="Globex")
    await admin.crm.upsert_deal(id="deal-1", name="Acme expansion", account_id="acc-1")
    await admin.pm.upsert_project(id="prj-1", portal_id="p-1", name="Acme rollout", owner_id="pu-admin")
    await stack.quiesce(SETTLE)
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=WITH_ADD_TASK,
                        deal_won_creates_project=False)
    await stack.quiesce(SETTLE)
    await stack.wait_for_mails(1)  # the matching report of the enable
    for record_type, record_id in (("account", "acc-1"), ("deal", "deal-1")):
        await admin.request("hub.project.associate", record_type=record_type, record_id=record_id, project_id="prj-1")
    await stack.quiesce(SETTLE)
    return admin


async def test_S12_crm_task_becomes_pm_task_only_with_linked_project_and_permission(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        refusals = await kafka_probe.reader(topics.TASKS_EVENTS)
        admin = await linked_world(stack)
        eve = admin.as_user("u-eve")
        before = {m["Message-ID"] for m in stack.mails()}

        # Allowed: Eve (add_task via the org's profile) saves tasks with "add to the PM tool".
        await eve.crm.upsert_task(id="ct-ok", record_type="account", record_id="acc-1", subject="Site survey",
                                  add_to_pm=True, due_date="2026-12-05", priority="medium", owner_id="u-eve")
        await eve.crm.upsert_task(id="ct-deal", record_type="deal", record_id="deal-1", subject="Price review",
                                  add_to_pm=True)
        await eve.crm.upsert_task(id="ct-plain", record_type="account", record_id="acc-1", subject="Call back")
        # Refused: the record has no linked project.
        await eve.crm.upsert_task(id="ct-nolink", record_type="account", record_id="acc-2", subject="Globex intro",
                                  add_to_pm=True)
        await stack.quiesce(SETTLE)
        pm_tasks = {t["title"]: t for t in await admin.pm.list("task")}
        assert set(pm_tasks) == {"Site survey", "Price review"}
        survey = pm_tasks["Site survey"]
        assert (survey["project_id"], survey["due_date"], survey["priority"], survey["owner_id"]) == (
            "prj-1", "2026-12-05", "medium", "pu-eve")
        assert pm_tasks["Price review"]["project_id"] == "prj-1"

        # Refused: the permission to add tasks is taken away (S23 applies from now on).
        await admin.request("hub.permissions.change", permissions=WITHOUT_ADD_TASK)
        await stack.quiesce(SETTLE)
        await eve.crm.upsert_task(id="ct-denied", record_type="account", record_id="acc-1", subject="Extra work",
                                  add_to_pm=True)
        await stack.quiesce(SETTLE)
        assert {t["title"] for t in await admin.pm.list("task")} == {"Site survey", "Price review"}

        mails = [m for m in await stack.wait_for_mails(len(before) + 2) if m["Message-ID"] not in before]
        records = await kafka_probe.collect(
            refusals, lambda rs: len(envelopes(rs, "tasks.request.refused")) >= 2, timeout=60, settle=1.0)

    refused = {e.payload.crm_task_id: e.payload for e in envelopes(records, "tasks.request.refused")}
    assert set(refused) == {"ct-nolink", "ct-denied"}
    assert refused["ct-nolink"].reason_code == "no_linked_project"
    assert "acc-2" in refused["ct-nolink"].reason and "no linked project" in refused["ct-nolink"].reason
    assert refused["ct-nolink"].record is not None and refused["ct-nolink"].record.record_id == "acc-2"
    assert refused["ct-denied"].reason_code == "permission_denied"
    assert "add tasks" in refused["ct-denied"].reason
    assert {r.acting_user_id for r in refused.values()} == {"u-eve"}

    # Eve (locale en) is told, naming the task.
    assert sorted(m["Subject"] for m in mails) == [
        '[SyncHub] Task "Extra work" could not be created in the project',
        '[SyncHub] Task "Globex intro" could not be created in the project',
    ]
    assert all("eve@example.com" in str(m["To"]) for m in mails)
    # ... and the account by its name, linked to it, with the reason worded from its code
    globex = next(m for m in mails if "Globex intro" in str(m["Subject"]))
    text = globex.get_body(preferencelist=("plain",)).get_content()
    assert 'Reason: The account "Globex" has no linked project in the project-management tool.' in text
    assert "Account: Globex  http://" in text and "/sandbox/crm/account/acc-2" in text
    html = globex.get_body(preferencelist=("html",)).get_content()
    assert re.search(r'<a href="http://[^"]+/sandbox/crm/account/acc-2">Globex</a>', html)
