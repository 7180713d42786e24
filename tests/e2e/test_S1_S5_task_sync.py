"""S1 two-way sync and S5 PM tasks -> CRM, end to end on the real stack.

What is asserted is what the OTHER tool now holds (the sandbox's CRM / PM records),
not merely that the hub published something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
SETTLE = 120.0


async def linked_world(stack: HubStack) -> Any:
    """An admin, a paid portal, account acc-1 linked to project prj-1 (via hub.project.associate)."""
    admin = stack.sandbox(acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-admin", portal_id="p-1", email="admin@example.com", name="Ada", role="admin")
    await admin.crm.upsert_account(id="acc-1", name="Acme")
    await admin.pm.upsert_project(id="prj-1", portal_id="p-1", name="Acme rollout", owner_id="pu-admin")
    await stack.quiesce(SETTLE)
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                        deal_won_creates_project=False)
    await stack.quiesce(SETTLE)
    await admin.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-1")
    await stack.quiesce(SETTLE)
    return admin


def crm_tasks_on(tasks: list[dict[str, Any]], record_type: str, record_id: str) -> list[dict[str, Any]]:
    return [t for t in tasks if t["record_type"] == record_type and t["record_id"] == record_id]


async def test_S1_two_way_task_sync_between_pm_and_crm(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await linked_world(stack)

        # PM -> CRM: a task added in the PM tool with "add to CRM" on the linked project.
        await admin.pm.upsert_task(id="pt-1", project_id="prj-1", title="Kick-off meeting", add_to_crm=True,
                                   due_date="2026-12-01", priority="high")
        await stack.quiesce(SETTLE)
        mirrored = crm_tasks_on(await admin.crm.list("task"), "account", "acc-1")
        assert [(t["subject"], t["status"], t["priority"], t["due_date"]) for t in mirrored] == [
            ("Kick-off meeting", "open", "high", "2026-12-01")]
        crm_task = mirrored[0]

        # CRM -> PM: the user renames and closes the mirrored task in the CRM.
        await admin.crm.update_task(crm_task["id"], subject="Kick-off meeting (done)", status="closed")
        await stack.quiesce(SETTLE)
        pm_task = await admin.pm.get("task", "pt-1")
        assert (pm_task["title"], pm_task["status"]) == ("Kick-off meeting (done)", "closed")

        # PM -> CRM again: a later change in the PM tool reaches the same CRM task (no duplicate created).
        await admin.pm.update_task("pt-1", status="open", priority="low")
        await stack.quiesce(SETTLE)
        after = crm_tasks_on(await admin.crm.list("task"), "account", "acc-1")
        assert [(t["id"], t["subject"], t["status"], t["priority"]) for t in after] == [
            (crm_task["id"], "Kick-off meeting (done)", "open", "low")]

        # CRM -> PM: a CRM task saved with "add to the PM tool" on the linked account becomes a PM task.
        await admin.crm.upsert_task(id="ct-9", record_type="account", record_id="acc-1", subject="Send contract",
                                    add_to_pm=True, due_date="2026-12-24")
        await stack.quiesce(SETTLE)
        pm_tasks = {t["title"]: t for t in await admin.pm.list("task")}
        assert set(pm_tasks) == {"Kick-off meeting (done)", "Send contract"}
        assert (pm_tasks["Send contract"]["project_id"], pm_tasks["Send contract"]["due_date"]) == ("prj-1", "2026-12-24")
        # ... and no echo loop: still exactly the two CRM tasks, one per upstream task.
        assert sorted(t["subject"] for t in await admin.crm.list("task")) == ["Kick-off meeting (done)", "Send contract"]


async def test_S5_only_flagged_non_recurring_pm_tasks_mirror_and_comments_become_notes(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await linked_world(stack)
        await admin.pm.upsert_task(id="pt-flag", project_id="prj-1", title="Flagged task", add_to_crm=True)
        await admin.pm.upsert_task(id="pt-plain", project_id="prj-1", title="Internal task", add_to_crm=False)
        await admin.pm.upsert_task(id="pt-rec", project_id="prj-1", title="Weekly status", add_to_crm=True, recurring=True)
        await stack.quiesce(SETTLE)
        crm_tasks = await admin.crm.list("task")
        assert [(t["subject"], t["record_type"], t["record_id"]) for t in crm_tasks] == [("Flagged task", "account", "acc-1")]

        # A comment on the mirrored task becomes a note on the linked account; one on an unmirrored task does not.
        await admin.pm.add_comment(id="cm-1", task_id="pt-flag", body="Customer confirmed the date", author_name="Ada")
        await admin.pm.add_comment(id="cm-2", task_id="pt-plain", body="internal only", author_name="Ada")
        await admin.pm.add_comment(id="cm-3", task_id="pt-rec", body="recurring note", author_name="Ada")
        await stack.quiesce(SETTLE)
        notes = await admin.crm.list("note")
        assert [(n["record_type"], n["record_id"], n["body"]) for n in notes] == [
            ("account", "acc-1", "Customer confirmed the date")]
        assert notes[0]["extra"]["pm_comment_id"] == "cm-1"

        # Later edits of the unflagged / recurring tasks still do not reach the CRM.
        await admin.pm.update_task("pt-plain", title="Internal task v2")
        await admin.pm.update_task("pt-rec", title="Weekly status v2")
        await stack.quiesce(SETTLE)
        assert [t["subject"] for t in await admin.crm.list("task")] == ["Flagged task"]
