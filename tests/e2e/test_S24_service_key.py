"""S24 service key: a per-org key reads that org's data only; a new key invalidates the old one at once."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from pathlib import Path

import httpx
import pytest

from hub_devstack.e2e import hub_stack
from hub_devstack.pytest_plugin import HubEnv

pytestmark = pytest.mark.e2e

PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
PATH = "/api/v1/records/account/a-1/projects"


async def _org_with_linked_project(stack, org: str, project_name: str, account_name: str) -> None:  # type: ignore[no-untyped-def]
    """Same record ids in every org: account a-1 matched to client cc-1 (by name), whose project pr-1 gets linked."""
    admin = stack.sandbox(org_id=org, acting_user_id="u-admin")
    await admin.crm.upsert_user(id="u-admin", email=f"admin@{org}.test", name="Ada", active=True, is_admin=True, locale="en")
    await admin.crm.upsert_account(id="a-1", name=account_name)
    await admin.pm.upsert_portal(id="p-1", name="Portal", plan="paid", active=True)
    await admin.pm.upsert_portal_user(id="pu-1", portal_id="p-1", email="owner@example.com", name="Owner")
    await admin.pm.upsert_client_company(id="cc-1", portal_id="p-1", name=account_name)
    await admin.pm.upsert_project(id="pr-1", portal_id="p-1", name=project_name, owner_id="pu-1", client_company_ids=["cc-1"])
    await stack.quiesce(120)
    await admin.request("hub.integration.enable", portal_id="p-1", field_mapping=[], permissions=PROFILE,
                        deal_won_creates_project=False)


def names(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [p["name"] for p in resp.json()["projects"]]


async def test_S24_new_service_key_invalidates_the_old_one_and_orgs_are_isolated(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        await _org_with_linked_project(stack, "org-1", "Org one project", "Acme Corp")
        await _org_with_linked_project(stack, "org-2", "Org two project", "Globex")
        await stack.quiesce(120)

        old = await stack.new_service_key("org-1")
        key2 = await stack.new_service_key("org-2")
        assert names(await stack.linking_api(PATH, old)) == ["Org one project"]
        assert names(await stack.linking_api(PATH, key2)) == ["Org two project"]  # each org sees its own data only

        new = await stack.new_service_key("org-1")
        old_after = await stack.linking_api(PATH, old)  # at once: no waiting for anything
        new_after = await stack.linking_api(PATH, new)
        key2_after = await stack.linking_api(PATH, key2)  # another org's rotation does not touch org-2's key

        # The UI path (hub.service_key.generate): only the hash travels; the key it stands for replaces `new`.
        ui_key = "hubk_" + secrets.token_urlsafe(32)
        await stack.sandbox(org_id="org-1", acting_user_id="u-admin").request(
            "hub.service_key.generate", key_id=str(uuid.uuid4()), key_sha256=hashlib.sha256(ui_key.encode()).hexdigest())
        # A non-admin cannot: the key they name never starts working.
        await stack.sandbox(org_id="org-1", acting_user_id="u-admin").crm.upsert_user(
            id="u-bob", email="bob@org-1.test", name="Bob", active=True, is_admin=False, locale="en")
        await stack.quiesce(120)
        bob_key = "hubk_" + secrets.token_urlsafe(32)
        await stack.sandbox(org_id="org-1", acting_user_id="u-bob").request(
            "hub.service_key.generate", key_id=str(uuid.uuid4()), key_sha256=hashlib.sha256(bob_key.encode()).hexdigest())
        await stack.quiesce(120)
        ui_after = await stack.linking_api(PATH, ui_key)
        new_after_ui = await stack.linking_api(PATH, new)
        bob_after = await stack.linking_api(PATH, bob_key)
        records_other = await stack.linking_api("/api/v1/projects/pr-1/records", key2)
        garbage = await stack.linking_api(PATH, "hubk_not-a-key")
        async with httpx.AsyncClient(base_url=stack.url("linking")) as http:
            anonymous = await http.get(PATH)

    assert old_after.status_code == 401
    assert names(new_after) == ["Org one project"]
    assert names(key2_after) == ["Org two project"]
    assert names(ui_after) == ["Org one project"]
    assert new_after_ui.status_code == 401
    assert bob_after.status_code == 401
    assert records_other.status_code == 200
    assert [(r["record_type"], r["record_id"], r["name"]) for r in records_other.json()["records"]] == [("account", "a-1", "Globex")]
    assert garbage.status_code == 401 and anonymous.status_code == 401
