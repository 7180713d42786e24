"""S7 disabling, end to end: links hidden, projects stay in the PM tool, task sync stops,
re-enabling the same portal does not resync, an explicit resync reconciles both sides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
SETTLE = 120.0


async def enable(admin: Any) -> None:
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                        deal_won_creates_project=False)


async def linked_world(stack: HubStack) -> Any:
    admin = stack.sandbox(acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-admin", portal_id="p-1", email="admin@example.com", name="Ada", role="admin")
    await admin.pm.upsert_portal_user(id="pu-dev", portal_id="p-1", email="dev@example.com", name="Dev")
    await admin.crm.upsert_account(id="acc-1", name="Acme")
    await admin.pm.upsert_project(id="prj-1", portal_id="p-1", name="Acme rollout", owner_id="pu-admin",
                                  user_ids=["pu-admin", "pu-dev"], progress_percent=40)
    await stack.quiesce(SETTLE)
    await enable(admin)
    await stack.quiesce(SETTLE)
    await admin.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-1")
    await stack.quiesce(SETTLE)
    return admin


async def linked(stack: HubStack, key: str) -> tuple[list[str], list[tuple[str, str]]]:
    by_record = await stack.linking_api("/api/v1/records/account/acc-1/projects", key)
    by_project = await stack.linking_api("/api/v1/projects/prj-1/records", key)
    assert by_record.status_code == 200 and by_project.status_code == 200
    return ([p["project_id"] for p in by_record.json()["projects"]],
            [(r["record_type"], r["record_id"]) for r in by_project.json()["records"]])


def by_subject(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["subject"]: t for t in tasks}


async def test_S7_disable_hides_links_stops_sync_and_only_explicit_resync_reconciles(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await linked_world(stack)
        key = await stack.new_service_key("org-1")
        await admin.pm.upsert_task(id="pt-1", project_id="prj-1", title="Install", add_to_crm=True, priority="low")
        await stack.quiesce(SETTLE)
        crm_task = by_subject(await admin.crm.list("task"))["Install"]
        assert await linked(stack, key) == (["prj-1"], [("account", "acc-1")])

        await admin.request("hub.integration.disable", portal_id="p-1")
        await stack.quiesce(SETTLE)
        # Links are no longer shown on the CRM side ...
        assert await linked(stack, key) == ([], [])
        # ... but the project and its users stay in the PM tool.
        project = await admin.pm.get("project", "prj-1")
        assert project["deleted"] is False and {"pu-admin", "pu-dev"} <= set(project["user_ids"])
        assert all(u["active"] for u in await admin.pm.list("portal_user"))
        # The admin is told that sync stopped.
        mails = await stack.wait_for_mails(2)  # the enable's matching report, then this one
        assert any(m["Subject"] == "[SyncHub] 同期が停止しました" for m in mails), [m["Subject"] for m in mails]
        stopped = next(m for m in mails if m["Subject"] == "[SyncHub] 同期が停止しました")
        text = stopped.get_body(preferencelist=("plain",)).get_content()
        assert "ポータル「Portal」" in text  # by its name, and the time in Tokyo time, written for people:
        assert re.search(r"停止日時: \d{4}年\d{1,2}月\d{1,2}日 \d{1,2}:\d\d:\d\d JST", text), text

        # Task sync stops, both ways.
        await admin.pm.update_task("pt-1", title="Install v2")
        await admin.pm.upsert_task(id="pt-2", project_id="prj-1", title="Train users", add_to_crm=True)
        await admin.crm.update_task(crm_task["id"], priority="high")
        await stack.quiesce(SETTLE)
        crm = by_subject(await admin.crm.list("task"))
        assert set(crm) == {"Install"} and crm["Install"]["priority"] == "high"
        pm1 = await admin.pm.get("task", "pt-1")
        assert (pm1["title"], pm1["priority"]) == ("Install v2", "low")

        # Enabling the same portal again shows the links again but resyncs nothing on its own.
        await enable(admin)
        await stack.quiesce(SETTLE)
        assert await linked(stack, key) == (["prj-1"], [("account", "acc-1")])
        crm = by_subject(await admin.crm.list("task"))
        assert set(crm) == {"Install"} and crm["Install"]["priority"] == "high"
        pm1 = await admin.pm.get("task", "pt-1")
        assert (pm1["title"], pm1["priority"]) == ("Install v2", "low")

        # The explicit resync reconciles: newest change per field wins, missed flagged tasks are mirrored.
        await admin.request("hub.integration.resync", portal_id="p-1")
        await stack.quiesce(SETTLE)
        crm = by_subject(await admin.crm.list("task"))
        assert set(crm) == {"Install v2", "Train users"}
        assert crm["Install v2"]["id"] == crm_task["id"] and crm["Install v2"]["priority"] == "high"
        assert (crm["Train users"]["record_type"], crm["Train users"]["record_id"]) == ("account", "acc-1")
        pm1 = await admin.pm.get("task", "pt-1")
        assert (pm1["title"], pm1["priority"]) == ("Install v2", "high")
        assert len(await admin.pm.list("task")) == 2  # nothing mirrored back as a new PM task
