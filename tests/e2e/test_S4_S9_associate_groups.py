"""S4 associate / dissociate / re-associate and S9 project groups, end to end through hub.requests.

Asserted on the PM side (the sandbox's projects: users, grants, client users, groups), the read API
(linked projects) and the answers on linking.events (offered projects, refusals with a reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics

pytestmark = pytest.mark.e2e

SETTLE = 120.0
NO_LINKING = {"role": "employee", "permissions": ["add_task"]}
LINKING = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


async def world(stack: HubStack, profile: dict[str, Any]) -> Any:
    """Admin Ada, user Bob (member of prj-a only) and Carol; portal users matched by e-mail; acc-1 with contact con-1."""
    admin = stack.sandbox(acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email="admin@example.com", name="Ada", active=True, is_admin=True, locale="ja")
    await admin.crm.upsert_user(id="u-bob", email="bob@example.com", name="Bob", active=True, is_admin=False, locale="en")
    await admin.crm.upsert_user(id="u-carol", email="carol@example.com", name="Carol", active=True, is_admin=False, locale="ja")
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-admin", portal_id="p-1", email="admin@example.com", name="Ada", role="admin")
    await admin.pm.upsert_portal_user(id="pu-bob", portal_id="p-1", email="Bob@Example.com", name="Bob", role="manager")
    await admin.pm.upsert_portal_user(id="pu-carol", portal_id="p-1", email="carol@example.com", name="Carol")
    await admin.pm.upsert_project(id="prj-a", portal_id="p-1", name="Alpha", owner_id="pu-admin", user_ids=["pu-admin", "pu-bob"])
    await admin.pm.upsert_project(id="prj-b", portal_id="p-1", name="Beta", owner_id="pu-admin", user_ids=["pu-admin"])
    await stack.quiesce(SETTLE)
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=profile,
                        deal_won_creates_project=False)
    await stack.quiesce(SETTLE)
    await admin.crm.upsert_account(id="acc-1", name="Acme")
    await admin.crm.upsert_contact(id="con-1", account_id="acc-1", last_name="Tanaka", email="tanaka@acme.example")
    await admin.crm.upsert_account(id="acc-2", name="Globex")
    await stack.quiesce(SETTLE)
    return admin


def answers(records: list[Any], request_id: str) -> list[Any]:
    types = ("linking.request.refused", "linking.associable_projects.listed", "linking.project.associated")
    return [e for t in types for e in envelopes(records, t) if str(e.payload.request_id) == request_id]


async def linked_projects(stack: HubStack, key: str, record_type: str, record_id: str) -> list[str]:
    resp = await stack.linking_api(f"/api/v1/records/{record_type}/{record_id}/projects", key)
    assert resp.status_code == 200, resp.text
    return [p["project_id"] for p in resp.json()["projects"]]


async def test_S4_associate_dissociate_reassociate_with_permissions(hub_env: HubEnv, kafka_probe: KafkaProbe,
                                                                    tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        events = await kafka_probe.reader(topics.LINKING_EVENTS)
        admin = await world(stack, NO_LINKING)
        bob = admin.as_user("u-bob")
        key = await stack.new_service_key("org-1")

        # Without edit/associate permission: a clear refusal, nothing linked.
        r_list0 = await bob.request("hub.projects.list_associable", record_type="account", record_id="acc-1")
        r_assoc0 = await bob.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-a")
        await stack.quiesce(SETTLE)
        assert await linked_projects(stack, key, "account", "acc-1") == []

        # The permissions change (S23): Bob may now associate the projects he is a member of.
        await admin.request("hub.permissions.change", permissions=LINKING)
        await stack.quiesce(SETTLE)
        r_list1 = await bob.request("hub.projects.list_associable", record_type="account", record_id="acc-1")
        await stack.quiesce(SETTLE)
        r_assoc = await bob.request(
            "hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-a",
            crm_users=[{"user_id": "u-carol", "role": "employee", "permissions": ["add_task"]}],
            client_contact_ids=["con-1"])
        r_other = await bob.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-b")
        await stack.quiesce(SETTLE)
        r_list2 = await bob.request("hub.projects.list_associable", record_type="account", record_id="acc-1")
        await stack.quiesce(SETTLE)

        # PM side: Carol was added with the role/permissions chosen for her; the contact is now a client user.
        project = await admin.pm.get("project", "prj-a")
        assert {"pu-admin", "pu-bob", "pu-carol"} <= set(project["user_ids"])
        assert project["extra"]["grants"]["pu-carol"] == {"role": "employee", "permissions": ["add_task"]}
        client_users = {c["id"]: c for c in await admin.pm.list("client_user")}
        tanaka = [c for c in client_users.values() if c["email"] == "tanaka@acme.example"]
        assert len(tanaka) == 1 and tanaka[0]["id"] in project["client_user_ids"]
        assert tanaka[0]["client_company_id"] in project["client_company_ids"]
        assert await linked_projects(stack, key, "account", "acc-1") == ["prj-a"]
        assert "pu-bob" not in (await admin.pm.get("project", "prj-b"))["user_ids"]

        # Dissociate, then the project is offered again and can be re-associated.
        r_dis = await bob.request("hub.project.dissociate", record_type="account", record_id="acc-1", project_id="prj-a")
        await stack.quiesce(SETTLE)
        assert await linked_projects(stack, key, "account", "acc-1") == []
        r_list3 = await bob.request("hub.projects.list_associable", record_type="account", record_id="acc-1")
        await stack.quiesce(SETTLE)
        r_again = await bob.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-a")
        await stack.quiesce(SETTLE)
        assert await linked_projects(stack, key, "account", "acc-1") == ["prj-a"]
        # The project itself stayed in the PM tool throughout.
        assert (await admin.pm.get("project", "prj-a"))["deleted"] is False

        records = await kafka_probe.collect(events, lambda rs: len(answers(rs, r_again["request_id"])) >= 1, timeout=60,
                                            settle=1.0)

    def one(r: dict[str, Any]) -> Any:
        got = answers(records, r["request_id"])
        assert len(got) == 1, (r, got)
        return got[0]

    for refused in (r_list0, r_assoc0):
        e = one(refused)
        assert e.event_type == "linking.request.refused"
        assert e.payload.reason_code == "permission_denied"
        assert "associate" in e.payload.reason
    assert [p.project_id for p in one(r_list1).payload.projects] == ["prj-a"]  # member of prj-a only, not prj-b
    assert one(r_assoc).event_type == "linking.project.associated"
    assert set(one(r_assoc).payload.project_user_ids) >= {"pu-admin", "pu-bob"}  # the project's users come along
    e_other = one(r_other)
    assert (e_other.event_type, e_other.payload.reason_code) == ("linking.request.refused", "permission_denied")
    assert one(r_list2).payload.projects == []  # prj-a already linked, prj-b not his
    assert not answers(records, r_dis["request_id"])  # dissociation accepted: no refusal
    assert [p.project_id for p in one(r_list3).payload.projects] == ["prj-a"]
    assert one(r_again).event_type == "linking.project.associated"


async def test_S9_create_and_edit_project_from_crm_with_a_new_group(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        admin = await world(stack, LINKING)
        key = await stack.new_service_key("org-1")

        # Creating a project from an account, in a new group.
        await admin.request("hub.project.create_from_record", record_type="account", record_id="acc-2",
                            name="Globex onboarding", new_group_name="Onboarding 2026", owner_id="u-admin")
        await stack.quiesce(SETTLE)
        groups = {g["name"]: g for g in await admin.pm.list("project_group")}
        assert set(groups) == {"Onboarding 2026"}
        created = [p for p in await admin.pm.list("project") if p["name"] == "Globex onboarding"]
        assert len(created) == 1
        assert created[0]["group_id"] == groups["Onboarding 2026"]["id"]
        assert created[0]["owner_id"] == "pu-admin"
        resp = await stack.linking_api("/api/v1/records/account/acc-2/projects", key)
        assert [(p["project_id"], p["group_id"]) for p in resp.json()["projects"]] == [
            (created[0]["id"], groups["Onboarding 2026"]["id"])]

        # Editing an existing project from the CRM (associating it) and putting it into another new group.
        await admin.request("hub.project.associate", record_type="account", record_id="acc-1", project_id="prj-b",
                            new_group_name="Key accounts")
        await stack.quiesce(SETTLE)
        groups = {g["name"]: g for g in await admin.pm.list("project_group")}
        assert set(groups) == {"Onboarding 2026", "Key accounts"}
        assert (await admin.pm.get("project", "prj-b"))["group_id"] == groups["Key accounts"]["id"]
        resp = await stack.linking_api("/api/v1/records/account/acc-1/projects", key)
        assert [(p["project_id"], p["group_id"]) for p in resp.json()["projects"]] == [("prj-b", groups["Key accounts"]["id"])]

        # An existing group can be chosen too.
        await admin.request("hub.project.associate", record_type="account", record_id="acc-2", project_id="prj-a",
                            group_id=groups["Onboarding 2026"]["id"])
        await stack.quiesce(SETTLE)
        assert (await admin.pm.get("project", "prj-a"))["group_id"] == groups["Onboarding 2026"]["id"]
        assert len(await admin.pm.list("project_group")) == 2
