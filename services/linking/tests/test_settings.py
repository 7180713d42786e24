"""Integration settings per CRM org (S3, S6, S7, S17, S20, S24) on the real broker, database and HTTP."""

from __future__ import annotations

import json
import uuid

import pytest

from hub_devstack.harness.linking import ADMIN_TOKEN, Harness, sha256
from hub_schema.events import requests

pytestmark = pytest.mark.integration


async def test_S3_admin_enables_and_non_admin_is_refused(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.user("u-staff", admin=False)
    await linking.settled()
    refused_rid = await linking.enable(by="u-staff")
    await linking.enable(by="u-admin", mapping=[{"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"}])
    changed = await linking.one("linking.integration.changed")
    refusal = await linking.one("linking.request.refused")
    assert refusal.payload.request_id == refused_rid
    assert refusal.payload.reason_code == "not_admin"
    assert "admin" in refusal.payload.reason
    assert changed.payload.state == "enabled" and changed.payload.portal_id == "p-1"
    assert changed.payload.changed_by == "u-admin"
    assert [m.crm_field for m in changed.payload.field_mapping] == ["Deal_Name"]
    assert changed.payload.permissions.role == "employee"
    evs = await linking.quiet()
    assert len(linking.of("linking.integration.changed", evs)) == 1, "the refused request changed nothing"


async def test_S17_portal_on_free_plan_is_refused_with_reason(linking: Harness) -> None:
    await linking.user("u-admin", admin=True)
    await linking.portal("p-free", plan="free")
    await linking.settled()
    await linking.enable(portal="p-free")
    refusal = await linking.one("linking.request.refused")
    assert refusal.payload.reason_code == "plan_required"
    assert "paid" in refusal.payload.reason
    evs = await linking.quiet()
    assert not linking.of("linking.integration.changed", evs)
    conn = await linking.db()
    try:
        assert await conn.fetchval("SELECT count(*) FROM integrations") == 0
    finally:
        await conn.close()


async def test_S6_mapping_with_custom_deal_and_account_fields(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme", custom={"Region": "Kanto", "Seats": 40})
    await linking.deal("deal-1", "acc-1", custom={"Project_Type": "Rollout", "Strategic": True})
    await linking.project("proj-0", custom_fields={"kickoff": "2024-04-01", "seats": 3})
    await linking.settled()
    unknown = await linking.enable(mapping=[{"pm_field": "kind", "crm_module": "deals", "crm_field": "No_Such_Field"}])
    incompatible = await linking.enable(mapping=[{"pm_field": "start_date", "crm_module": "deals",
                                                  "crm_field": "Project_Type"}])
    incompatible_custom = await linking.enable(mapping=[{"pm_field": "seats", "crm_module": "deals",
                                                         "crm_field": "Strategic"}])
    wrong_declared = await linking.enable(mapping=[{"pm_field": "budget", "crm_module": "deals", "crm_field": "Amount",
                                                    "crm_field_type": "date"}])
    await linking.settled()
    good = [
        {"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"},
        {"pm_field": "kind", "crm_module": "deals", "crm_field": "Project_Type", "crm_field_type": "picklist"},
        {"pm_field": "region", "crm_module": "accounts", "crm_field": "Region"},
        {"pm_field": "seats", "crm_module": "accounts", "crm_field": "Seats"},
        {"pm_field": "end_date", "crm_module": "deals", "crm_field": "Closing_Date"},
    ]
    await linking.enable(mapping=good)
    changed = await linking.one("linking.integration.changed")
    assert [(m.crm_module, m.crm_field) for m in changed.payload.field_mapping] == [
        ("deals", "Deal_Name"), ("deals", "Project_Type"), ("accounts", "Region"), ("accounts", "Seats"),
        ("deals", "Closing_Date")]
    refusals = {e.payload.request_id: e.payload for e in linking.of("linking.request.refused")}
    assert set(refusals) == {unknown, incompatible, incompatible_custom, wrong_declared}
    assert all(r.reason_code == "invalid_field_mapping" for r in refusals.values())
    assert "unknown field" in refusals[unknown].reason and "No_Such_Field" in refusals[unknown].reason
    assert "incompatible" in refusals[incompatible].reason and "start_date" in refusals[incompatible].reason
    assert "incompatible" in refusals[incompatible_custom].reason
    assert "currency" in refusals[wrong_declared].reason


async def test_S7_disable_hides_links_reenable_does_not_resync_explicit_resync_does(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme Inc.")
    await linking.company("cc-1", "ACME")
    await linking.project("proj-1", companies=["cc-1"], progress=30)
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    await linking.one("linking.link.changed")
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-1"]

    await linking.request(requests.IntegrationDisable(request_id=uuid.uuid4(), acting_user_id="u-admin", portal_id="p-1"))
    stopped = await linking.one("linking.sync.stopped")
    assert stopped.payload.portal_id == "p-1"
    disabled = await linking.one("linking.integration.changed", lambda e: e.payload.state == "disabled")
    assert disabled.payload.portal_id is None and disabled.payload.previous_portal_id == "p-1"
    assert await linking.projects_of(key, "account", "acc-1") == []
    assert await linking.records_of(key, "proj-1") == []
    evs = await linking.quiet()
    assert not [e for e in linking.of("linking.link.changed", evs) if not e.payload.linked], "nothing unlinked upstream"
    assert not linking.of("pm.project.delete", evs)

    await linking.enable()
    await linking.one("linking.integration.changed", lambda e: e.payload.state == "enabled" and e.payload.revision == 3)
    evs = await linking.quiet()
    assert not linking.of("linking.resync.requested", evs)
    assert len(linking.of("linking.matching.completed", evs)) == 1, "re-enabling the same portal does not resync"
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-1"]

    rid = uuid.uuid4()
    await linking.request(requests.IntegrationResync(request_id=rid, acting_user_id="u-admin", portal_id="p-1"))
    resync = await linking.one("linking.resync.requested")
    assert resync.payload.request_id == rid and resync.payload.portal_id == "p-1"
    await linking.wait_for(lambda es: len(linking.of("linking.matching.completed", es)) == 2)


async def test_S20_switch_portal_removes_old_links_and_links_new_portal(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.portal("p-2")
    await linking.account("acc-1", "Acme")
    await linking.company("cc-1", "Acme", portal="p-1")
    await linking.project("proj-1", portal="p-1", companies=["cc-1"])
    await linking.company("cc-2", "acme", portal="p-2")
    await linking.project("proj-2", portal="p-2", companies=["cc-2"])
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    await linking.one("linking.link.changed", lambda e: e.payload.project_id == "proj-1")
    await linking.request(requests.IntegrationSwitchPortal(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                           current_portal_id="p-1", new_portal_id="p-2"))
    await linking.one("linking.link.changed", lambda e: e.payload.project_id == "proj-2" and e.payload.linked)
    evs = await linking.quiet()
    removed = [e.payload for e in linking.of("linking.link.changed", evs) if not e.payload.linked]
    assert [(r.portal_id, r.project_id, r.record.record_id) for r in removed] == [("p-1", "proj-1", "acc-1")]
    switched = linking.of("linking.integration.changed", evs)[-1].payload
    assert switched.portal_id == "p-2" and switched.previous_portal_id == "p-1" and switched.state == "enabled"
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-2"]


async def test_S24_service_key_rotation_old_key_fails_at_once(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.company("cc-1", "Acme")
    await linking.project("proj-1", companies=["cc-1"])
    await linking.settled()
    await linking.enable()
    await linking.one("linking.link.changed")

    r = await linking.http.post("/api/v1/orgs/org-1/service-key", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert (await linking.http.get("/api/v1/records/account/acc-1/projects")).status_code == 401
    first = await linking.new_key()
    assert len(await linking.projects_of(first, "account", "acc-1")) == 1
    second = await linking.new_key()
    old = await linking.http.get("/api/v1/records/account/acc-1/projects", headers={"Authorization": f"Bearer {first}"})
    assert old.status_code == 401
    assert len(await linking.projects_of(second, "account", "acc-1")) == 1

    other_org = await linking.new_key("org-2")
    assert await linking.projects_of(other_org, "account", "acc-1") == []
    assert await linking.records_of(other_org, "proj-1") == []

    # The same rotation through hub.requests: only the hash travels; only admins may do it.
    third = "hubk_generated-by-the-ui-" + uuid.uuid4().hex
    await linking.request(requests.ServiceKeyGenerate(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                      key_id=uuid.uuid4(), key_sha256=sha256(third)))
    await linking.settled()
    assert len(await linking.projects_of(third, "account", "acc-1")) == 1
    gone = await linking.http.get("/api/v1/projects/proj-1/records", headers={"X-Hub-Service-Key": second})
    assert gone.status_code == 401

    evs = await linking.quiet()
    rotated = linking.of("linking.service_key.rotated", evs)
    assert len(rotated) == 4
    raw = b"".join(r.value for r in linking.records)
    for secret in (first, second, third, other_org, ADMIN_TOKEN):
        assert secret.encode() not in raw, "a key never travels in an event"
    conn = await linking.db()
    try:
        stored = await conn.fetch("SELECT key_sha256 FROM service_keys")
        assert first not in str(stored) and sha256(third) in [s["key_sha256"] for s in stored]
    finally:
        await conn.close()


async def test_S3_stale_identity_revision_cannot_restore_admin_rights(linking: Harness) -> None:
    await linking.portal("p-1")
    await linking.user("u-admin", admin=False, revision=2)
    await linking.settled()
    await linking.user("u-admin", admin=True, revision=1)  # older copy, arrives late
    await linking.settled()
    await linking.enable()
    refusal = await linking.one("linking.request.refused")
    assert refusal.payload.reason_code == "not_admin"


@pytest.mark.attack("read the services' logs for service keys (an insider, a log pipeline)",
                    outcome="every mint is logged with org, who and when; the key and its hash never appear")
async def test_S24_every_key_minted_is_logged_without_the_key(linking: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    await linking.admin_with_portal()
    await linking.settled()
    capsys.readouterr()
    minted = await linking.new_key()
    ui_key = "hubk_generated-by-the-ui-" + uuid.uuid4().hex
    await linking.request(requests.ServiceKeyGenerate(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                      key_id=uuid.uuid4(), key_sha256=sha256(ui_key)))
    await linking.settled()
    logged = capsys.readouterr().out
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    mints = [line for line in lines if line.get("event") == "service key minted"]
    assert [(m["org_id"], m["minted_by"]) for m in mints] == [("org-1", "admin-token"), ("org-1", "u-admin")]
    assert all(m["minted_at"] and m["key_id"] for m in mints)
    for secret in (minted, sha256(minted), ui_key, sha256(ui_key), ADMIN_TOKEN):
        assert secret not in logged
