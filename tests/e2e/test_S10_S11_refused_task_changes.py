"""S10 (reopening a subtask of a closed parent) and S11 (due date in a fixed-schedule project), end to end.

A CRM user's change the PM tool must refuse: the PM task is untouched, the CRM task is put back so both
sides agree, and the acting user gets an e-mail naming the task (Japanese by default, English for `en`).
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
SETTLE = 120.0


async def linked_world(stack: HubStack, *, schedule_fixed: bool) -> Any:
    """Ada (ja, admin) and Eve (en); account acc-1 linked to project prj-1."""
    admin = stack.sandbox(acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
    await admin.crm.upsert_user(id="u-eve", email="eve@example.com", name="Eve", active=True, is_admin=False, locale="en")
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-admin", portal_id="p-1", email="admin@example.com", name="Ada", role="admin")
    await admin.pm.upsert_portal_user(id="pu-eve", portal_id="p-1", email="eve@example.com", name="Eve")
    await admin.crm.upsert_account(id="acc-1", name="Acme")
    await admin.pm.upsert_project(id="prj-1", portal_id="p-1", name="Acme rollout", owner_id="pu-admin",
                                  schedule_fixed=schedule_fixed)
    await stack.quiesce(SETTLE)
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                        deal_won_creates_project=False)
    await stack.quiesce(SETTLE)
    await stack.wait_for_mails(1)  # the matching report (S22) the admin gets on enabling
    await admin.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-1")
    await stack.quiesce(SETTLE)
    return admin


async def crm_task_for(admin: Any, subject: str) -> dict[str, Any]:
    found = [t for t in await admin.crm.list("task") if t["subject"] == subject]
    assert len(found) == 1, (subject, found)
    return found[0]


def text_of(mail: EmailMessage) -> str:
    return mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]


def mails_to(stack: HubStack, address: str, *, after: set[str]) -> list[EmailMessage]:
    """Mails to `address` whose Message-ID is not in `after` (the enable's matching report is not ours)."""
    return [m for m in stack.mails() if address in str(m["To"]) and m["Message-ID"] not in after]


def seen(stack: HubStack) -> set[str]:
    return {m["Message-ID"] for m in stack.mails()}


async def test_S10_reopening_subtask_of_closed_parent_is_refused_and_mailed(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await linked_world(stack, schedule_fixed=False)
        await admin.pm.upsert_task(id="pt-parent", project_id="prj-1", title="Launch", add_to_crm=True)
        await stack.quiesce(SETTLE)
        await admin.pm.upsert_task(id="pt-sub-ja", project_id="prj-1", title="Prepare slides", parent_task_id="pt-parent",
                                   add_to_crm=True)
        await admin.pm.upsert_task(id="pt-sub-en", project_id="prj-1", title="Book the venue", parent_task_id="pt-parent",
                                   add_to_crm=True)
        await stack.quiesce(SETTLE)
        # In the PM tool the subtasks and then the parent are closed; that reaches the CRM.
        for tid in ("pt-sub-ja", "pt-sub-en", "pt-parent"):
            await admin.pm.update_task(tid, status="closed")
        await stack.quiesce(SETTLE)
        sub_ja = await crm_task_for(admin, "Prepare slides")
        sub_en = await crm_task_for(admin, "Book the venue")
        assert (sub_ja["status"], sub_en["status"], (await crm_task_for(admin, "Launch"))["status"]) == ("closed",) * 3
        before = seen(stack)
        assert all("照合" in m["Subject"] for m in stack.mails())  # only the enable's matching report so far

        # Ada (ja) and Eve (en) reopen a subtask each in the CRM.
        await admin.crm.update_task(sub_ja["id"], status="open")
        await admin.as_user("u-eve").crm.update_task(sub_en["id"], status="open")
        await stack.quiesce(SETTLE)
        await stack.wait_for_mails(len(before) + 2)
        await stack.quiesce(SETTLE)

        # The PM tool still has them closed; the CRM tasks were put back to closed (both sides agree).
        for pm_id in ("pt-sub-ja", "pt-sub-en", "pt-parent"):
            assert (await admin.pm.get("task", pm_id))["status"] == "closed", pm_id
        assert (await crm_task_for(admin, "Prepare slides"))["status"] == "closed"
        assert (await crm_task_for(admin, "Book the venue"))["status"] == "closed"

        ja = mails_to(stack, "admin@example.com", after=before)
        en = mails_to(stack, "eve@example.com", after=before)
        assert len(ja) == 1 and len(en) == 1, [(m["To"], m["Subject"]) for m in stack.mails()]
        assert ja[0]["Subject"] == "[SyncHub] サブタスク「Prepare slides」を更新できませんでした"
        # each mail names the subtask, its parent task, the project and the account (not their ids), in its language
        ja_text, en_text = text_of(ja[0]), text_of(en[0])
        assert "親タスク「Launch」" in ja_text and "Prepare slides" in ja_text and "プロジェクト: Acme rollout" in ja_text
        assert "取引先: Acme" in ja_text and "理由: 親タスク「Launch」がプロジェクト管理ツールで完了" in ja_text
        assert en[0]["Subject"] == '[SyncHub] Subtask "Book the venue" could not be updated'
        assert 'parent task "Launch" is closed' in en_text and "Book the venue" in en_text
        assert "Parent task: Launch" in en_text and "Account: Acme" in en_text
        for text in (ja_text, en_text):
            assert "acc-1" not in text.replace("/sandbox/crm/account/acc-1", "") and "pt-parent" not in text
            assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text), "times are written for people, not ISO"
        assert "JST" in ja_text and "UTC" in en_text  # Ada (ja) reads Tokyo time, Eve (en) UTC


async def test_S11_due_date_change_in_fixed_schedule_project_is_refused_and_mailed(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await linked_world(stack, schedule_fixed=True)
        await admin.pm.upsert_task(id="pt-1", project_id="prj-1", title="Deliver report", due_date="2026-12-10",
                                   add_to_crm=True)
        await admin.pm.upsert_task(id="pt-2", project_id="prj-1", title="Final review", due_date="2026-12-20",
                                   add_to_crm=True)
        await stack.quiesce(SETTLE)
        t1 = await crm_task_for(admin, "Deliver report")
        t2 = await crm_task_for(admin, "Final review")
        assert (t1["due_date"], t2["due_date"]) == ("2026-12-10", "2026-12-20")
        before = seen(stack)

        await admin.crm.update_task(t1["id"], due_date="2026-12-31")
        await admin.as_user("u-eve").crm.update_task(t2["id"], due_date="2027-01-15")
        await stack.quiesce(SETTLE)
        await stack.wait_for_mails(len(before) + 2)
        await stack.quiesce(SETTLE)

        assert (await admin.pm.get("task", "pt-1"))["due_date"] == "2026-12-10"
        assert (await admin.pm.get("task", "pt-2"))["due_date"] == "2026-12-20"
        assert (await crm_task_for(admin, "Deliver report"))["due_date"] == "2026-12-10"
        assert (await crm_task_for(admin, "Final review"))["due_date"] == "2026-12-20"

        ja = mails_to(stack, "admin@example.com", after=before)
        en = mails_to(stack, "eve@example.com", after=before)
        assert len(ja) == 1 and len(en) == 1, [(m["To"], m["Subject"]) for m in stack.mails()]
        assert ja[0]["Subject"] == "[SyncHub] タスク「Deliver report」の期日を変更できませんでした"
        assert "スケジュールが固定" in text_of(ja[0]) and "プロジェクト「Acme rollout」" in text_of(ja[0])
        assert en[0]["Subject"] == '[SyncHub] The due date of task "Final review" could not be changed'
        assert "fixed schedule" in text_of(en[0]) and 'project "Acme rollout"' in text_of(en[0])

        # A change that is not a due date still goes through in the same project.
        await admin.crm.update_task(t1["id"], subject="Deliver final report")
        await stack.quiesce(SETTLE)
        assert (await admin.pm.get("task", "pt-1"))["title"] == "Deliver final report"
        assert len(stack.mails()) == len(before) + 2


async def history(stack: HubStack, key: str, crm_task_id: str) -> list[dict[str, Any]]:
    """A task's history as the CRM side reads it: with org-1's service key (the org is the key's)."""
    resp = await stack.api("tasks", "GET", "/api/v1/history", token=key, params={"crm_task_id": crm_task_id})
    resp.raise_for_status()
    return resp.json()["decisions"]


async def test_S10_S11_both_sides_refusing_ends_in_one_conflict_per_change_not_a_loop(hub_env: HubEnv,
                                                                                       tmp_path: Path) -> None:
    """Issue 14: the change refused (by the hub's S10/S11 rule or by the PM tool), then the put-back refused by the
    other side (a locked record). Before, the hub sent the change again and again; now it records one `conflict`,
    sends at most one e-mail, sends nothing more, and the next real edit goes through."""
    import argparse

    from hub_devstack.pytest_plugin import patched_env
    from hub_tasks import domain
    from hub_tasks import history as history_cli

    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await linked_world(stack, schedule_fixed=True)
        await admin.pm.upsert_task(id="pt-due", project_id="prj-1", title="Deliver report", due_date="2026-12-10",
                                   add_to_crm=True)
        await admin.pm.upsert_task(id="pt-due-pm", project_id="prj-1", title="Final review", due_date="2026-12-20",
                                   add_to_crm=True)
        await admin.pm.upsert_task(id="pt-title", project_id="prj-1", title="Write intro", add_to_crm=True)
        await admin.pm.upsert_task(id="pt-parent", project_id="prj-1", title="Launch", add_to_crm=True)
        await stack.quiesce(SETTLE)
        await admin.pm.upsert_task(id="pt-sub", project_id="prj-1", title="Prepare slides", parent_task_id="pt-parent",
                                   add_to_crm=True)
        await admin.pm.upsert_task(id="pt-sub-pm", project_id="prj-1", title="Print handouts",
                                   parent_task_id="pt-parent", add_to_crm=True)
        await stack.quiesce(SETTLE)
        for tid in ("pt-sub", "pt-parent"):
            await admin.pm.update_task(tid, status="closed")
        await stack.quiesce(SETTLE)
        crm = {pm_id: (await crm_task_for(admin, subject))["id"] for pm_id, subject in (
            ("pt-due", "Deliver report"), ("pt-due-pm", "Final review"), ("pt-title", "Write intro"),
            ("pt-sub", "Prepare slides"), ("pt-sub-pm", "Print handouts"))}
        # Every CRM task is locked against the integration; so are the PM tasks the PM tool must refuse to change.
        for crm_id in crm.values():
            await admin.crm.lock_task(crm_id)
        for pm_id in ("pt-title", "pt-sub-pm", "pt-due-pm"):
            await admin.pm.lock_task(pm_id)
        before_mails = seen(stack)
        before = await admin.counters()

        # From the CRM: a due date (the hub refuses: fixed schedule), a subtask reopened under a closed parent (the
        # hub refuses: S10), a title (the PM tool refuses: locked); each put-back is refused by the CRM (locked).
        await admin.crm.update_task(crm["pt-due"], due_date="2026-12-31")
        await admin.crm.update_task(crm["pt-sub"], status="open")
        await admin.crm.update_task(crm["pt-title"], subject="Write the intro")
        # From the PM tool: a task's due date and a subtask's title; the CRM refuses, then the PM tool the revert.
        await admin.pm.update_task("pt-due-pm", due_date="2027-01-10")
        await admin.pm.update_task("pt-sub-pm", title="Print the handouts")
        await stack.quiesce(SETTLE)  # before the fix this never settled: the commands went round for ever
        after = await admin.counters()
        await stack.wait_for_mails(len(before_mails) + 3)
        await stack.quiesce(SETTLE)
        mails = mails_to(stack, "admin@example.com", after=before_mails)
        key = await stack.new_service_key("org-1")
        await stack.wait_key_accepted("tasks", key, "/api/v1/history?crm_task_id=none")
        histories = {pm_id: await history(stack, key, crm_id) for pm_id, crm_id in crm.items()}

        conn = await stack.db("tasks")
        try:
            hub_task_id = await conn.fetchval("SELECT hub_task_id FROM task_mappings WHERE crm_task_id = $1", crm["pt-title"])
        finally:
            await conn.close()
        with patched_env(hub_env.env("tasks")):
            cli = await history_cli._run(argparse.Namespace(hub_task_id=str(hub_task_id), org_id=None, pm_task_id=None,
                                                            crm_task_id=None))

        # The next real edit goes through: the title, unlocked on both sides, changed in the PM tool.
        await admin.crm.lock_task(crm["pt-title"], locked=False)
        await admin.pm.lock_task("pt-title", locked=False)
        await admin.pm.update_task("pt-title", title="Write the introduction")
        await stack.quiesce(SETTLE)
        resumed = await admin.crm.get("task", crm["pt-title"])

    rejected = int(after["totals"]["command_rejected"]) - int(before["totals"]["command_rejected"])
    applied = int(after["totals"]["command_applied"]) - int(before["totals"]["command_applied"])
    # two corrections refused (due date, subtask), three changes refused and their reverts refused: 8 commands
    assert (applied, rejected) == (0, 8), after
    assert applied + rejected <= domain.MAX_COMMANDS_PER_CHANGE * 5
    for pm_id, decisions in histories.items():
        conflicts = [d for d in decisions if d["decision"] == "conflict"]
        assert len(conflicts) == 1 and conflicts[0]["reason_code"] == "locked", (pm_id, decisions)
    assert [d["fields"] for d in histories["pt-due"] if d["decision"] == "conflict"] == [["due_date"]]
    assert [d["fields"] for d in histories["pt-sub"] if d["decision"] == "conflict"] == [["status"]]
    assert '"decision": "conflict"' in cli
    # one e-mail per CRM user's change (the refusal), none for the PM users' changes, none for the conflicts
    assert len(mails) == 3, [m["Subject"] for m in mails]
    subjects = {m["Subject"] for m in mails}
    assert {"[SyncHub] タスク「Deliver report」の期日を変更できませんでした",
            "[SyncHub] サブタスク「Prepare slides」を更新できませんでした"} <= subjects, subjects
    assert resumed is not None and resumed["subject"] == "Write the introduction"
