"""S2 Projects tab and S16 many-to-many, end to end: the linking read API over real HTTP with a service key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
SETTLE = 120.0


async def enabled_world(stack: HubStack) -> Any:
    admin = stack.sandbox(acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-admin", portal_id="p-1", email="admin@example.com", name="Ada", role="admin")
    for pid, name in (("prj-a", "Alpha"), ("prj-b", "Beta"), ("prj-c", "Gamma")):
        await admin.pm.upsert_project(id=pid, portal_id="p-1", name=name, owner_id="pu-admin")
    await stack.quiesce(SETTLE)
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                        deal_won_creates_project=False)
    await stack.quiesce(SETTLE)
    # Created after enabling, so identity syncs them as client company / client user (S13).
    await admin.crm.upsert_account(id="acc-1", name="Acme")
    await admin.crm.upsert_account(id="acc-2", name="Globex")
    await admin.crm.upsert_contact(id="con-1", account_id="acc-1", last_name="Tanaka", email="tanaka@acme.example")
    await admin.crm.upsert_deal(id="deal-1", name="Acme expansion", account_id="acc-1")
    await admin.crm.upsert_lead(id="lead-1", last_name="Suzuki", company="Initech")
    await stack.quiesce(SETTLE)
    return admin


async def associate(admin: Any, record_type: str, record_id: str, project_id: str) -> None:
    await admin.request("hub.project.associate", record_type=record_type, record_id=record_id, project_id=project_id)


async def projects_of(stack: HubStack, key: str, record_type: str, record_id: str) -> list[dict[str, Any]]:
    resp = await stack.linking_api(f"/api/v1/records/{record_type}/{record_id}/projects", key)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["record"] == {"record_type": record_type, "record_id": record_id}
    return body["projects"]


async def records_of(stack: HubStack, key: str, project_id: str) -> list[tuple[str, str]]:
    resp = await stack.linking_api(f"/api/v1/projects/{project_id}/records", key)
    assert resp.status_code == 200, resp.text
    return sorted((r["record_type"], r["record_id"]) for r in resp.json()["records"])


async def test_S2_projects_tab_lists_linked_projects_with_status_and_progress(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await enabled_world(stack)
        await admin.pm.update_project("prj-a", status="active", progress_percent=10)
        await admin.pm.update_project("prj-b", status="on_hold", progress_percent=55)
        for record_type, record_id in (("account", "acc-1"), ("contact", "con-1"), ("deal", "deal-1"), ("lead", "lead-1")):
            await associate(admin, record_type, record_id, "prj-a")
        await associate(admin, "lead", "lead-1", "prj-b")
        await stack.quiesce(SETTLE)
        key = await stack.new_service_key("org-1")

        # Without (or with a wrong) key: refused.
        assert (await stack.linking_api("/api/v1/records/account/acc-1/projects", "not-a-key")).status_code == 401

        for record_type, record_id in (("account", "acc-1"), ("contact", "con-1"), ("deal", "deal-1")):
            rows = await projects_of(stack, key, record_type, record_id)
            assert [(p["project_id"], p["name"], p["status"], p["progress_percent"], p["portal_id"]) for p in rows] == [
                ("prj-a", "Alpha", "active", 10, "p-1")], (record_type, rows)
        lead = await projects_of(stack, key, "lead", "lead-1")
        assert [(p["project_id"], p["status"], p["progress_percent"]) for p in lead] == [
            ("prj-a", "active", 10), ("prj-b", "on_hold", 55)]
        assert await projects_of(stack, key, "account", "acc-2") == []

        # The PM project moves on: the Projects tab shows the new progress and status.
        await admin.pm.update_project("prj-a", progress_percent=80, status="completed")
        await stack.quiesce(SETTLE)
        rows = await projects_of(stack, key, "account", "acc-1")
        assert [(p["project_id"], p["status"], p["progress_percent"]) for p in rows] == [("prj-a", "completed", 80)]


async def test_S16_many_projects_per_record_and_many_records_per_project(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await enabled_world(stack)
        # one project <-> several accounts
        await associate(admin, "account", "acc-1", "prj-a")
        await associate(admin, "account", "acc-2", "prj-a")
        # one account <-> several projects
        await associate(admin, "account", "acc-1", "prj-b")
        await associate(admin, "account", "acc-1", "prj-c")
        # likewise contacts, deals, leads on the shared project
        await associate(admin, "contact", "con-1", "prj-a")
        await associate(admin, "deal", "deal-1", "prj-a")
        await associate(admin, "lead", "lead-1", "prj-a")
        await associate(admin, "lead", "lead-1", "prj-c")
        await stack.quiesce(SETTLE)
        key = await stack.new_service_key("org-1")

        assert [p["project_id"] for p in await projects_of(stack, key, "account", "acc-1")] == ["prj-a", "prj-b", "prj-c"]
        assert [p["project_id"] for p in await projects_of(stack, key, "account", "acc-2")] == ["prj-a"]
        assert [p["project_id"] for p in await projects_of(stack, key, "lead", "lead-1")] == ["prj-a", "prj-c"]
        assert await records_of(stack, key, "prj-a") == [
            ("account", "acc-1"), ("account", "acc-2"), ("contact", "con-1"), ("deal", "deal-1"), ("lead", "lead-1")]
        assert await records_of(stack, key, "prj-b") == [("account", "acc-1")]
        assert await records_of(stack, key, "prj-c") == [("account", "acc-1"), ("lead", "lead-1")]

        # Removing one side of a many-to-many link leaves the others in place.
        await admin.request("hub.project.dissociate", record_type="account", record_id="acc-2", project_id="prj-a")
        await stack.quiesce(SETTLE)
        assert [p["project_id"] for p in await projects_of(stack, key, "account", "acc-2")] == []
        assert await records_of(stack, key, "prj-a") == [
            ("account", "acc-1"), ("contact", "con-1"), ("deal", "deal-1"), ("lead", "lead-1")]
        assert [p["project_id"] for p in await projects_of(stack, key, "account", "acc-1")] == ["prj-a", "prj-b", "prj-c"]
