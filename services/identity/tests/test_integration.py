"""Identity through the real broker and database (hub_env / kafka_probe), one story per SPEC id.

Events on different topics are not ordered relative to each other, so a test waits
for the effect of one step (an output event, or a row) before sending the next.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from hub_devstack.harness import ServiceHarness, build_service
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, running
from hub_schema import make_event, topics
from hub_schema.events import crm, linking, pm, requests
from hub_schema.events.common import PermissionProfile

pytestmark = pytest.mark.integration

ORG = "org-1"
PORTAL = "portal-1"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
V = {"modified_at": T0}
MANAGER = PermissionProfile(role="manager", permissions=["add_task", "edit_project", "associate_project"])


def ev(payload: Any, key: str, origin: str = "crm") -> Any:
    return make_event(payload, org_id=ORG, entity_key=key, producer="test", origin=origin)  # type: ignore[arg-type]


def crm_user(uid: str, email: str, *, version: int = 1, admin: bool = False, name: str | None = None,
             active: bool = True, locale: str = "en", time_zone: str | None = None) -> Any:
    return ev(crm.CrmUserUpserted(id=uid, email=email, name=name or uid, active=active, is_admin=admin,
                                  locale=locale, time_zone=time_zone, version=version, modified_at=T0 + timedelta(seconds=version)),
              f"user:{uid}")


OUTPUTS = (topics.IDENTITY_EVENTS, topics.PM_COMMANDS, topics.NOTIFICATION_REQUESTS)


async def start(env: HubEnv, probe: KafkaProbe, **settings: str) -> tuple[Any, ServiceHarness]:
    """The identity service (not started yet: each story runs it in `running(...)`) and the harness reading its output."""
    service = build_service(env, "identity", **settings)
    return service, ServiceHarness(env, probe, "identity", await probe.reader(*OUTPUTS), service)


async def db_value(env: HubEnv, sql: str, *args: Any) -> Any:
    base, _, _ = env.admin_dsn.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{env.database}", server_settings={"search_path": "identity"})
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def wait_db(env: HubEnv, sql: str, *args: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await db_value(env, sql, *args):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {sql}")
        await asyncio.sleep(0.2)


async def enable(env: HubEnv, probe: KafkaProbe, revision: int = 1) -> None:
    await probe.send(ev(linking.IntegrationChanged(state="enabled", portal_id=PORTAL, changed_by="u-admin",
                                                   changed_at=T0, revision=revision), f"{ORG}:integration", "hub"))
    await wait_db(env, "SELECT true FROM orgs WHERE org_id = $1 AND state = 'enabled' AND portal_id = $2", ORG, PORTAL)


async def admin_ready(env: HubEnv, probe: KafkaProbe, out: ServiceHarness, locale: str = "en", time_zone: str | None = None) -> None:
    await probe.send(crm_user("u-admin", "Admin@Org.example", admin=True, name="Admin", locale=locale, time_zone=time_zone))
    await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-admin")))


async def test_S13_account_client_company_and_contact_client_user_pairing_both_ways(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)
        # CRM -> PM: the account becomes a client company, pending until the PM echo.
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", version=1, **V), "account:acc-1"))
        await out.wait(lambda o: bool(o.payloads("pm.client_company.create", crm_account_id="acc-1"))
                       and bool(o.payloads("identity.customer_mapping.changed", crm_id="acc-1")))
        create_cc = out.payloads("pm.client_company.create")[0]
        assert create_cc.portal_id == PORTAL and create_cc.name == "Acme"
        assert out.payloads("identity.customer_mapping.changed", crm_id="acc-1")[-1].state == "pending"
        await kafka_probe.send(ev(crm.CrmContactUpserted(id="con-1", account_id="acc-1", first_name="Hanako",
                                                         last_name="Sato", email="Hanako@Acme.example", version=1, **V),
                                  "contact:con-1"))
        await wait_db(hub_env, "SELECT true FROM contacts WHERE id = 'con-1'")
        assert not out.payloads("pm.client_user.create"), "the contact waits for its client company"
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-1", name="Acme", version=1,
                                                             command_id=create_cc.command_id, **V),
                                  "client_company:cc-1", "pm"))
        await out.wait(lambda o: bool(o.payloads("pm.client_user.create", crm_record_id="con-1"))
                       and o.payloads("identity.customer_mapping.changed", crm_id="acc-1")[-1].state == "linked")
        acc_map = out.payloads("identity.customer_mapping.changed", crm_id="acc-1")[-1]
        assert (acc_map.state, acc_map.pm_id) == ("linked", "cc-1")
        create_cu = out.payloads("pm.client_user.create", crm_record_id="con-1")[0]
        assert (create_cu.client_company_id, create_cu.email, create_cu.name) == ("cc-1", "Hanako@Acme.example",
                                                                                  "Hanako Sato")
        await kafka_probe.send(ev(pm.PmClientUserUpserted(portal_id=PORTAL, id="cu-1", email="hanako@acme.example",
                                                          name="Hanako Sato", client_company_id="cc-1", version=1,
                                                          command_id=create_cu.command_id, **V),
                                  "client_user:cu-1", "pm"))
        await out.wait(lambda o: any(m.state == "linked" for m in
                                     o.payloads("identity.customer_mapping.changed", crm_id="con-1")))
        assert out.payloads("identity.customer_mapping.changed", crm_id="con-1")[-1].pm_id == "cu-1"
        # Updates keep the pair in step.
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme Holdings", version=2, **V),
                                  "account:acc-1"))
        await kafka_probe.send(ev(crm.CrmContactUpserted(id="con-1", account_id="acc-1", first_name="Hanako",
                                                         last_name="Sato", email="h.sato@acme.example", version=2, **V),
                                  "contact:con-1"))
        await out.wait(lambda o: bool(o.payloads("pm.client_company.update")) and bool(o.payloads("pm.client_user.update")))
        assert out.payloads("pm.client_company.update")[0].name == "Acme Holdings"
        assert out.payloads("pm.client_user.update")[0].email == "h.sato@acme.example"
        # PM -> CRM: a client company made in the PM tool pairs with the account of the same name, no second company.
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-2", name="Globex", version=1, **V),
                                  "client_company:cc-2", "pm"))
        await kafka_probe.send(ev(pm.PmClientUserUpserted(portal_id=PORTAL, id="cu-2", email="ken@globex.example",
                                                          name="Ken Ito", client_company_id="cc-2", version=1, **V),
                                  "client_user:cu-2", "pm"))
        await wait_db(hub_env, "SELECT count(*) = 2 FROM client_users WHERE id IN ('cu-1', 'cu-2')")
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-2'")
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-2", name=" globex", version=1, **V), "account:acc-2"))
        await out.wait(lambda o: bool(o.payloads("identity.customer_mapping.changed", crm_id="acc-2")))
        await kafka_probe.send(ev(crm.CrmContactUpserted(id="con-2", account_id="acc-2", last_name="Ito",
                                                         first_name="Ken", email="Ken@Globex.example", version=1, **V),
                                  "contact:con-2"))
        await out.wait(lambda o: bool(o.payloads("identity.customer_mapping.changed", crm_id="con-2")))
        # A delete on the PM side unlinks the pair; nothing is deleted on the CRM side.
        await kafka_probe.send(ev(pm.PmClientCompanyDeleted(portal_id=PORTAL, id="cc-2", version=2, **V),
                                  "client_company:cc-2", "pm"))
        await out.wait(lambda o: o.payloads("identity.customer_mapping.changed", crm_id="acc-2")[-1].state == "unlinked",
                       settle=1.0)
    acc2 = out.payloads("identity.customer_mapping.changed", crm_id="acc-2")
    assert [(m.state, m.pm_id) for m in acc2] == [("linked", "cc-2"), ("unlinked", "cc-2")]
    con2 = out.payloads("identity.customer_mapping.changed", crm_id="con-2")
    assert [(m.state, m.pm_id) for m in con2] == [("linked", "cu-2")]
    assert [c.crm_account_id for c in out.payloads("pm.client_company.create")] == ["acc-1"]
    assert [c.crm_record_id for c in out.payloads("pm.client_user.create")] == ["con-1"]
    assert await db_value(hub_env, "SELECT deleted FROM accounts WHERE id = 'acc-2'") is False


async def test_S18_import_portal_users_skips_one_already_there(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await admin_ready(hub_env, kafka_probe, out)
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(requests.PermissionsChange(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                             permissions=MANAGER), f"org:{ORG}"))
        await out.wait(lambda o: bool(o.payloads("identity.permission_profile.changed")))
        await kafka_probe.send(crm_user("u-3", "jiro@org.example", name="Jiro"))
        await kafka_probe.send(crm_user("u-4", "Saburo@Org.example", name="Saburo"))
        await kafka_probe.send(ev(pm.PmPortalUserUpserted(portal_id=PORTAL, id="pu-4", email="saburo@org.example",
                                                          name="Saburo", role="employee", active=True, version=1, **V),
                                  "portal_user:pu-4", "pm"))
        await out.wait(lambda o: any(a.portal_user_id == "pu-4" for a in
                                     o.payloads("identity.user_access.changed", crm_user_id="u-4")))
        request_id = uuid.uuid4()
        await kafka_probe.send(ev(requests.UsersImport(request_id=request_id, acting_user_id="u-admin",
                                                       user_ids=["u-3", "u-4", "u-404"], import_as="portal_user"),
                                  f"org:{ORG}"))
        await out.wait(lambda o: bool(o.payloads("identity.import.completed")) and bool(o.payloads("pm.portal_user.invite")))
        invites = out.payloads("pm.portal_user.invite")
        assert [(i.crm_user_id, i.email, i.role, i.permissions) for i in invites] == [
            ("u-3", "jiro@org.example", "manager", ["add_task", "edit_project", "associate_project"])]
        done = out.payloads("identity.import.completed")[0]
        assert done.request_id == request_id and done.imported_as == "portal_user"
        assert [a.crm_user_id for a in done.added] == ["u-3"]
        assert [(s.crm_user_id, s.reason_code) for s in done.skipped] == [("u-4", "already_member"),
                                                                          ("u-404", "unknown_user")]
        # The admin who asked is told the outcome (optional e-mail, S18).
        await out.wait(lambda o: any(n.kind == "import_outcome" for n in o.payloads("notification.requested")))
        [note] = [n for n in out.payloads("notification.requested") if n.kind == "import_outcome"]
        assert note.optional is True and (note.recipient.user_id, note.recipient.email) == ("u-admin", "Admin@Org.example")
        assert (note.data["import_as"], note.data["imported"]) == ("portal_user", 1)
        assert [(f["user_id"], f["email"], f["reason_code"]) for f in note.data["failed"]] == [
            ("u-4", "Saburo@Org.example", "already_member"), ("u-404", None, "unknown_user")]
        assert all(f["reason"] for f in note.data["failed"])
        # The PM echo pairs the new portal user with the CRM user.
        await kafka_probe.send(ev(pm.PmPortalUserUpserted(portal_id=PORTAL, id="pu-3", email="jiro@org.example",
                                                          name="Jiro", role="manager", active=True, version=1,
                                                          command_id=invites[0].command_id, **V),
                                  "portal_user:pu-3", "pm"))
        await out.wait(lambda o: any(a.portal_user_id == "pu-3" for a in
                                     o.payloads("identity.user_access.changed", crm_user_id="u-3")))
        # Importing again adds no one twice.
        await kafka_probe.send(ev(requests.UsersImport(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                       user_ids=["u-3", "u-4"], import_as="portal_user"), f"org:{ORG}"))
        await out.wait(lambda o: len(o.payloads("identity.import.completed")) == 2, settle=1.0)
    again = out.payloads("identity.import.completed")[1]
    assert again.added == [] and {s.reason_code for s in again.skipped} == {"already_member"}
    assert len(out.payloads("pm.portal_user.invite")) == 1


async def test_S18_only_admins_may_import(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await kafka_probe.send(crm_user("u-2", "staff@org.example"))
        await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-2")))
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(requests.UsersImport(request_id=uuid.uuid4(), acting_user_id="u-2",
                                                       user_ids=["u-2"], import_as="portal_user"), f"org:{ORG}"))
        await out.wait(lambda o: bool(o.payloads("identity.request.refused")), settle=1.0)
    refusal = out.payloads("identity.request.refused")[0]
    assert (refusal.request_type, refusal.reason_code, refusal.acting_user_id) == ("hub.users.import", "not_admin", "u-2")
    assert not out.payloads("pm.portal_user.invite") and not out.payloads("identity.import.completed")


async def test_S19_client_user_import_with_shared_email_refused_with_notification_and_no_commands(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await admin_ready(hub_env, kafka_probe, out, locale="ja", time_zone="Europe/Berlin")
        await enable(hub_env, kafka_probe)
        for uid, email in (("u-5", "Sato@Shared.example"), ("u-6", "sato@shared.example"), ("u-7", "yuki@org.example")):
            await kafka_probe.send(crm_user(uid, email, name=f"Name {uid}"))
        await out.wait(lambda o: len(o.payloads("identity.user_access.changed")) >= 4)
        request_id = uuid.uuid4()
        await kafka_probe.send(ev(requests.UsersImport(request_id=request_id, acting_user_id="u-admin",
                                                       user_ids=["u-5", "u-6", "u-7"], import_as="client_user",
                                                       client_company_id="cc-1"), f"org:{ORG}"))
        await out.wait(lambda o: bool(o.payloads("identity.request.refused"))
                       and bool(o.payloads("notification.requested")), settle=1.5)
    refusal = out.payloads("identity.request.refused")[0]
    assert refusal.request_id == request_id and refusal.reason_code == "duplicate_email"
    assert "sato@shared.example" in refusal.reason and "u-5" in refusal.reason and "u-6" in refusal.reason
    note = out.payloads("notification.requested")[0]
    assert note.kind == "duplicate_client_emails" and note.optional is False
    assert (note.recipient.user_id, note.recipient.email, note.recipient.locale) == ("u-admin", "Admin@Org.example", "ja")
    assert note.recipient.time_zone == "Europe/Berlin", "the CRM user's own time zone, for the times in the mail"
    assert out.payloads("identity.user_access.changed", crm_user_id="u-admin")[-1].time_zone == "Europe/Berlin"
    assert note.data["duplicates"][0]["email"] == "sato@shared.example"
    assert note.data["cause"] == "user_import"
    assert [r["id"] for r in note.data["duplicates"][0]["records"]] == ["u-5", "u-6"]
    assert not [e for e in out.events() if e.event_type.startswith("pm.")], "nothing half-created"
    assert not out.payloads("identity.import.completed")
    assert await db_value(hub_env, "SELECT count(*) FROM pending_commands") == 0


async def test_S23_profile_change_republishes_access_later_and_non_admin_is_refused(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await admin_ready(hub_env, kafka_probe, out)
        await kafka_probe.send(crm_user("u-2", "staff@org.example"))
        await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-2")))
        before = out.payloads("identity.user_access.changed", crm_user_id="u-2")[-1]
        assert before.profile.permissions == [] and before.is_admin is False
        refused_id = uuid.uuid4()
        await kafka_probe.send(ev(requests.PermissionsChange(request_id=refused_id, acting_user_id="u-2",
                                                             permissions=MANAGER), f"org:{ORG}"))
        await out.wait(lambda o: bool(o.payloads("identity.request.refused")))
        sent_at = datetime.now(timezone.utc)
        await kafka_probe.send(ev(requests.PermissionsChange(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                             permissions=MANAGER,
                                                             effective_from=T0 - timedelta(days=30)), f"org:{ORG}"))
        await out.wait(lambda o: len(o.payloads("identity.user_access.changed", crm_user_id="u-2")) >= 2, settle=1.0)
    refusal = out.payloads("identity.request.refused")[0]
    assert (refusal.request_id, refusal.reason_code, refusal.request_type) == (refused_id, "not_admin",
                                                                               "hub.permissions.change")
    changes = out.payloads("identity.permission_profile.changed")
    assert len(changes) == 1 and changes[0].profile == MANAGER and changes[0].changed_by == "u-admin"
    assert changes[0].effective_from >= sent_at - timedelta(seconds=1), "not retroactive: no earlier than the change"
    for uid in ("u-admin", "u-2"):
        access = out.payloads("identity.user_access.changed", crm_user_id=uid)
        assert access[-1].profile == MANAGER and access[-1].effective_from == changes[0].effective_from
        assert access[-1].effective_from > access[0].effective_from
        assert access[-1].revision == access[0].revision + 1
    history = await db_value(hub_env, "SELECT count(*) FROM permission_profiles WHERE org_id = $1", ORG)
    assert history == 1


async def test_out_of_order_and_duplicate_events_are_harmless(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        newer = crm_user("u-1", "taro@org.example", version=2, name="Taro New")
        await kafka_probe.send(newer)
        await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-1")))
        await kafka_probe.send(crm_user("u-1", "taro@org.example", version=1, name="Taro Old"))  # older, late
        await kafka_probe.send(newer)  # the same event again
        await kafka_probe.send(crm_user("u-1", "taro@org.example", version=2, name="Taro New"))  # same version, new id
        await kafka_probe.send(crm_user("u-1", "taro@org.example", version=1, name="Taro Old"))  # marker follows
        await kafka_probe.send(crm_user("u-marker", "m@org.example"))
        await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-marker")), settle=1.5)
    access = out.payloads("identity.user_access.changed", crm_user_id="u-1")
    assert [(a.name, a.revision) for a in access] == [("Taro New", 1)]
    assert await db_value(hub_env, "SELECT name FROM crm_users WHERE crm_user_id = 'u-1'") == "Taro New"


async def test_S13_stale_account_event_sends_no_second_client_company(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme 2", version=2, **V), "account:acc-1"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme 1", version=1, **V), "account:acc-1"))
        await kafka_probe.send(ev(crm.CrmAccountDeleted(id="acc-1", version=3, **V), "account:acc-1"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme 2b", version=2, **V), "account:acc-1"))
        await out.wait(lambda o: any(m.state == "unlinked" for m in o.payloads("identity.customer_mapping.changed")),
                       settle=1.5)
    assert [c.name for c in out.payloads("pm.client_company.create")] == ["Acme 2"]
    assert not out.payloads("pm.client_company.update")
    assert [m.state for m in out.payloads("identity.customer_mapping.changed")] == ["pending", "unlinked"]


async def test_deactivated_crm_user_stays_mapped_inactive_and_pm_side_is_told(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(pm.PmPortalUserUpserted(portal_id=PORTAL, id="pu-2", email="hana@org.example",
                                                          name="Hana", role="employee", active=True, version=1, **V),
                                  "portal_user:pu-2", "pm"))
        await wait_db(hub_env, "SELECT true FROM portal_users WHERE id = 'pu-2'")
        await kafka_probe.send(crm_user("u-2", "HANA@Org.Example"))
        await out.wait(lambda o: any(a.portal_user_id == "pu-2" for a in
                                     o.payloads("identity.user_access.changed", crm_user_id="u-2")))
        await kafka_probe.send(ev(crm.CrmUserDeactivated(id="u-2", version=5, modified_at=T0 + timedelta(minutes=5)),
                                  "user:u-2"))
        await out.wait(lambda o: bool(o.payloads("pm.portal_user.deactivate")), settle=1.0)
    cmd = out.payloads("pm.portal_user.deactivate")[0]
    assert (cmd.portal_id, cmd.user_id, cmd.crm_user_id) == (PORTAL, "pu-2", "u-2")
    last = out.payloads("identity.user_access.changed", crm_user_id="u-2")[-1]
    assert (last.active, last.portal_user_id, last.email) == (False, "pu-2", "hana@org.example")
    assert await db_value(hub_env, "SELECT active FROM crm_users WHERE crm_user_id = 'u-2'") is False


async def test_S19_contacts_sharing_an_email_are_not_half_created_in_automatic_sync(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-9", name="Initech", version=1, **V),
                                  "client_company:cc-9", "pm"))
        for cid, email in (("con-a", "Info@Initech.example"), ("con-b", "info@initech.example"),
                           ("con-c", "peter@initech.example")):
            await kafka_probe.send(ev(crm.CrmContactUpserted(id=cid, account_id="acc-9", last_name=cid, email=email,
                                                             version=1, **V), f"contact:{cid}"))
        await wait_db(hub_env, "SELECT count(*) = 3 FROM contacts")
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-9'")
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-9", name="Initech", version=1, **V), "account:acc-9"))
        await out.wait(lambda o: bool(o.payloads("identity.customer_mapping.changed", crm_id="acc-9")), settle=1.5)
    assert out.payloads("identity.customer_mapping.changed", crm_id="acc-9")[0].pm_id == "cc-9"
    assert not out.payloads("pm.client_user.create"), "all of the account's contacts or none"
    assert not out.payloads("pm.client_company.create")


async def test_S13_pm_rejection_of_a_create_unlinks_the_pending_pair(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", version=1, **V), "account:acc-1"))
        await out.wait(lambda o: bool(o.payloads("pm.client_company.create")))
        command = out.payloads("pm.client_company.create")[0]
        await kafka_probe.send(ev(pm.PmCommandRejected(command_id=command.command_id,
                                                       command_type="pm.client_company.create",
                                                       reason_code="invalid", reason="name not allowed"),
                                  "client_company:acc-1", "pm"))
        await out.wait(lambda o: any(m.state == "unlinked" for m in o.payloads("identity.customer_mapping.changed")))
    assert [m.state for m in out.payloads("identity.customer_mapping.changed", crm_id="acc-1")] == ["pending", "unlinked"]
    assert await db_value(hub_env, "SELECT count(*) FROM pending_commands") == 0


async def test_S23_profile_at_time_t_read_api(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    import httpx

    service, out = await start(hub_env, kafka_probe, HUB_OPERATOR_TOKEN=OPERATOR)
    async with running(service):
        await admin_ready(hub_env, kafka_probe, out)
        await kafka_probe.send(ev(requests.PermissionsChange(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                             permissions=MANAGER), f"org:{ORG}"))
        await out.wait(lambda o: bool(o.payloads("identity.permission_profile.changed")))
        effective = out.payloads("identity.permission_profile.changed")[0].effective_from
        transport = httpx.ASGITransport(app=service.http_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
            path = f"/v1/orgs/{ORG}/permission-profile"
            anonymous = await client.get(path)
            client.headers["Authorization"] = f"Bearer {OPERATOR}"
            earlier = await client.get(path, params={"at": (effective - timedelta(seconds=1)).isoformat()})
            later = await client.get(path, params={"at": (effective + timedelta(seconds=1)).isoformat()})
            bad = await client.get(path, params={"at": "yesterday"})
            naive = await client.get(path, params={"at": "2026-01-01T00:00:00"})
    assert anonymous.status_code == 401
    assert earlier.json()["profile"] == {"role": "employee", "permissions": []}
    assert later.json()["profile"] == MANAGER.model_dump(mode="json")
    assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "at"
    assert naive.status_code == 422


OPERATOR = "identity-test-operator-" + "x" * 16


def matching_done(matched: list[tuple[str, str, str]], unmatched: list[tuple[str, str, str]] = []) -> list[Any]:  # noqa: B006
    """The matching result as linking sends it, on the key of linking.integration.changed: one
    linking.matching.page per row (so adoption across pages is exercised), then linking.matching.completed."""
    from hub_schema.events.notifications import MatchedClient, MatchingReportPage, MatchingReportSummary, UnmatchedClient

    rows = ([MatchedClient(client_company_id=cc, client_name=name, account_id=acc, account_name=name)
             for cc, acc, name in matched]
            + [UnmatchedClient(client_company_id=cc, client_name=name, reason_code=code, reason=code)  # type: ignore[arg-type]
               for cc, name, code in unmatched])
    report_id = uuid.uuid4()
    pages = [MatchingReportPage(page=n, pages=len(rows), matched=[r] if isinstance(r, MatchedClient) else [],
                                unmatched=[r] if isinstance(r, UnmatchedClient) else [])
             for n, r in enumerate(rows, 1)]
    summary = MatchingReportSummary(report_id=report_id, portal_id=PORTAL, finished_at=T0, matched=len(matched),
                                    unmatched=len(unmatched), pages=max(len(rows), 1))
    return [*(ev(linking.MatchingPage(report_id=report_id, portal_id=PORTAL, rows=page), f"{ORG}:integration", "hub")
              for page in pages),
            ev(linking.MatchingCompleted(report=summary, requested_by="u-admin", projects_linked=0),
               f"{ORG}:integration", "hub")]


async def test_S13_S21_matching_result_is_adopted_and_accounts_from_before_the_enable_sync_with_no_duplicate(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        # Before the enable: a client company in the PM tool, two accounts and a contact in the CRM.
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-1", name="ACME Inc.", version=1,
                                                             **V), "client_company:cc-1", "pm"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-0", name="Old Co", version=1, **V), "account:acc-0"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", version=1, **V), "account:acc-1"))
        await kafka_probe.send(ev(crm.CrmContactUpserted(id="con-1", account_id="acc-1", last_name="Lee",
                                                         email="lee@acme.example", version=1, **V), "contact:con-1"))
        # ... and a client linking will find ambiguous (two accounts named like it).
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-7", name="Initech", version=1,
                                                             **V), "client_company:cc-7", "pm"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-7", name="Initech", version=1, **V), "account:acc-7"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-8", name="Initech Inc.", version=1, **V),
                                  "account:acc-8"))
        await wait_db(hub_env, "SELECT count(*) = 4 FROM accounts")
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-7'")
        await wait_db(hub_env, "SELECT true FROM contacts WHERE id = 'con-1'")
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-1'")
        # The enable starts linking's matching; accounts arriving before its result wait for it.
        await kafka_probe.send(ev(linking.IntegrationChanged(state="enabled", portal_id=PORTAL, changed_by="u-admin",
                                                             changed_at=T0, revision=1, matching_pending=True),
                                  f"{ORG}:integration", "hub"))
        await wait_db(hub_env, "SELECT matching_pending FROM orgs WHERE org_id = $1 AND state = 'enabled'", ORG)
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", version=2, **V), "account:acc-1"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-2", name="Newco", version=1, **V), "account:acc-2"))
        await wait_db(hub_env, "SELECT true FROM accounts WHERE id = 'acc-1' AND version = 2")
        await wait_db(hub_env, "SELECT true FROM accounts WHERE id = 'acc-2'")
        await out.wait(lambda o: True, settle=2.0)  # give a wrong create time to reach the topic
        assert not out.payloads("pm.client_company.create"), "nothing is created while matching is pending"
        assert not out.payloads("identity.customer_mapping.changed")
        # Linking matched cc-1 <-> acc-1 (normalised names): identity adopts it and creates the rest.
        for sent in matching_done([("cc-1", "acc-1", "Acme")], [("cc-7", "Initech", "ambiguous")]):
            await kafka_probe.send(sent)
        await out.wait(lambda o: len(o.payloads("pm.client_company.create")) == 2
                       and bool(o.payloads("pm.client_user.create", crm_record_id="con-1")), settle=1.0)
        adopted = out.payloads("identity.customer_mapping.changed", crm_id="acc-1")
        assert [(m.state, m.pm_id) for m in adopted] == [("linked", "cc-1")]
        # acc-7 and acc-8 ("Initech Inc.": the same name once normalised) are named like the ambiguous cc-7:
        # neither paired by name nor given a second "Initech".
        assert sorted(c.crm_account_id for c in out.payloads("pm.client_company.create")) == ["acc-0", "acc-2"]
        assert not out.payloads("identity.customer_mapping.changed", crm_id="acc-7")
        assert not out.payloads("identity.customer_mapping.changed", crm_id="acc-8")
        assert out.payloads("pm.client_user.create", crm_record_id="con-1")[0].client_company_id == "cc-1"
        # A contact added later to the matched account becomes a client user of the matched company.
        await kafka_probe.send(ev(crm.CrmContactUpserted(id="con-2", account_id="acc-1", last_name="Kim",
                                                         email="kim@acme.example", version=1, **V), "contact:con-2"))
        await out.wait(lambda o: bool(o.payloads("pm.client_user.create", crm_record_id="con-2")))
        assert out.payloads("pm.client_user.create", crm_record_id="con-2")[0].client_company_id == "cc-1"
        # The same result again (a resync) creates and pairs nothing twice.
        for sent in matching_done([("cc-1", "acc-1", "Acme")], [("cc-7", "Initech", "ambiguous")]):
            await kafka_probe.send(sent)
        await kafka_probe.send(crm_user("u-marker", "m@org.example"))
        await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-marker")), settle=1.5)
    assert len(out.payloads("pm.client_company.create")) == 2
    assert len(out.payloads("pm.client_user.create")) == 2
    assert len(out.payloads("identity.customer_mapping.changed", crm_id="acc-1")) == 1
    assert await db_value(hub_env, "SELECT matching_pending FROM orgs WHERE org_id = $1", ORG) is False


async def test_S13_S21_a_create_in_flight_when_matching_pairs_its_account_is_not_paired_twice(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)  # no matching follows this one
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", version=1, **V), "account:acc-1"))
        await out.wait(lambda o: bool(o.payloads("pm.client_company.create", crm_account_id="acc-1")))
        create = out.payloads("pm.client_company.create")[0]
        # Someone adds the same company in the PM tool meanwhile: not paired by name (acc-1 has a pending pair).
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-1", name="ACME Inc.", version=1,
                                                             **V), "client_company:cc-1", "pm"))
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-1'")
        # A resync's matching pairs acc-1 with cc-1 (normalised names) before the create's echo.
        for sent in matching_done([("cc-1", "acc-1", "Acme")]):
            await kafka_probe.send(sent)
        await out.wait(lambda o: o.payloads("identity.customer_mapping.changed", crm_id="acc-1")[-1].state == "linked")
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-new", name="Acme", version=1,
                                                             command_id=create.command_id, **V),
                                  "client_company:cc-new", "pm"))
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-new'")
        await kafka_probe.send(crm_user("u-marker", "m@org.example"))
        await out.wait(lambda o: bool(o.payloads("identity.user_access.changed", crm_user_id="u-marker")), settle=1.5)
    acc1 = out.payloads("identity.customer_mapping.changed", crm_id="acc-1")
    assert [(m.state, m.pm_id) for m in acc1] == [("pending", None), ("linked", "cc-1")]
    assert await db_value(hub_env, "SELECT pm_id FROM customer_mappings WHERE crm_id = 'acc-1'") == "cc-1"
    assert await db_value(hub_env, "SELECT count(*) FROM pending_commands") == 0
    assert [c.crm_account_id for c in out.payloads("pm.client_company.create")] == ["acc-1"]


async def test_S13_re_enabling_without_matching_syncs_accounts_stored_while_disabled(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-3", name="Stored Co", version=1, **V), "account:acc-3"))
        await wait_db(hub_env, "SELECT true FROM accounts WHERE id = 'acc-3'")
        await enable(hub_env, kafka_probe)
        await out.wait(lambda o: bool(o.payloads("pm.client_company.create")), settle=1.0)
    assert [(c.crm_account_id, c.name) for c in out.payloads("pm.client_company.create")] == [("acc-3", "Stored Co")]


async def test_S13_company_names_pair_as_hub_schema_normalises_them_full_width_and_company_forms_included(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """「株式会社サンプル」, 「サンプル株式会社」 and 「ｻﾝﾌﾟﾙ(株)」 are one name to identity (the normaliser linking
    matches with); a client company stored before name_norm existed is normalised when identity first looks."""
    from hub_identity.state import IdentityState

    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        # Before the enable: a client company in the PM tool, an account in the CRM.
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-1", name="株式会社サンプル", version=1,
                                                             **V), "client_company:cc-1", "pm"))
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="ｻﾝﾌﾟﾙ(株)", version=1, **V), "account:acc-1"))
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-1'")
        await wait_db(hub_env, "SELECT true FROM accounts WHERE id = 'acc-1'")
        # The enable syncs acc-1: paired with the company of its name, nothing created.
        await enable(hub_env, kafka_probe)
        await out.wait(lambda o: bool(o.payloads("identity.customer_mapping.changed", crm_id="acc-1")))
        # A second company of that name made in the PM tool finds no unpaired account; a new account pairs with it.
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-2", name="サンプル株式会社", version=1,
                                                             **V), "client_company:cc-2", "pm"))
        await wait_db(hub_env, "SELECT true FROM client_companies WHERE id = 'cc-2'")
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-2", name="株式会社 サンプル", version=1, **V),
                                  "account:acc-2"))
        await out.wait(lambda o: bool(o.payloads("identity.customer_mapping.changed", crm_id="acc-2")))
        # A client company written before the migration (name_norm NULL) is found by its normalised name.
        await db_value(hub_env, "INSERT INTO client_companies (org_id, portal_id, id, name, version) "
                                "VALUES ($1, $2, 'cc-3', 'ＡＢＣ商事株式会社', 1) RETURNING true", ORG, PORTAL)
        IdentityState.names_normalised = False  # as in a process started on the migrated database
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-3", name="abc商事", version=1, **V), "account:acc-3"))
        await out.wait(lambda o: bool(o.payloads("identity.customer_mapping.changed", crm_id="acc-3")), settle=1.0)
    pairs = {m.crm_id: (m.state, m.pm_id) for m in out.payloads("identity.customer_mapping.changed")}
    assert pairs == {"acc-1": ("linked", "cc-1"), "acc-2": ("linked", "cc-2"), "acc-3": ("linked", "cc-3")}
    assert not out.payloads("pm.client_company.create")
    assert await db_value(hub_env, "SELECT name_norm FROM client_companies WHERE id = 'cc-3'") == "abc商事"
