"""Links between projects and CRM records (S2, S4, S9, S14, S16, S19, S21/S22) through the real broker, DB and HTTP."""

from __future__ import annotations

import uuid

import pytest

from hub_devstack.harness.linking import NO_PERMS, Harness
from hub_schema.events import identity, requests

pytestmark = pytest.mark.integration

ASSOC = identity.PermissionProfile(role="employee", permissions=["associate_project"])


def associate(by: str, project: str, record_type: str = "account", record_id: str = "acc-1", **kw: object) -> requests.ProjectAssociate:
    return requests.ProjectAssociate(request_id=uuid.uuid4(), acting_user_id=by, record_type=record_type,  # type: ignore[arg-type]
                                     record_id=record_id, project_id=project, **kw)  # type: ignore[arg-type]


async def test_S4_associate_dissociate_reassociate_with_permissions(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.user("u-2", profile=ASSOC, portal_user_id="pu-2")
    await linking.user("u-3", profile=NO_PERMS, portal_user_id="pu-3")
    await linking.user("u-4", profile=NO_PERMS, portal_user_id="pu-4")
    await linking.account("acc-1", "Acme")
    await linking.project("proj-1", users=["pu-2", "pu-7"])
    await linking.project("proj-2", users=["pu-9"])
    await linking.project("proj-3", users=["pu-8", "pu-2"], status="on_hold", progress=55)
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    await linking.settled()

    listing = requests.ProjectsListAssociable(request_id=uuid.uuid4(), acting_user_id="u-2", record_type="account",
                                              record_id="acc-1")
    await linking.request(listing)
    listed = await linking.one("linking.associable_projects.listed", lambda e: e.payload.request_id == listing.request_id)
    assert [(p.project_id, p.status, p.progress_percent) for p in listed.payload.projects] == [
        ("proj-1", "active", 0), ("proj-3", "on_hold", 55)], "only projects u-2 may edit/associate"

    no_perm_list = listing.model_copy(update={"request_id": uuid.uuid4(), "acting_user_id": "u-3"})
    await linking.request(no_perm_list)
    refused = await linking.one("linking.request.refused", lambda e: e.payload.request_id == no_perm_list.request_id)
    assert refused.payload.reason_code == "permission_denied" and "permission" in refused.payload.reason

    no_perm = associate("u-3", "proj-1")
    await linking.request(no_perm)
    r = await linking.one("linking.request.refused", lambda e: e.payload.request_id == no_perm.request_id)
    assert r.payload.reason_code == "permission_denied"

    not_member = associate("u-2", "proj-2")
    await linking.request(not_member)
    r = await linking.one("linking.request.refused", lambda e: e.payload.request_id == not_member.request_id)
    assert r.payload.reason_code == "permission_denied"

    ok = associate("u-2", "proj-1", owner_id="u-2", new_group_name="Key accounts",
                   crm_users=[requests.CrmUserGrant(user_id="u-4", role="contractor", permissions=["add_task"])])
    await linking.request(ok)
    done = await linking.one("linking.project.associated", lambda e: e.payload.request_id == ok.request_id)
    assert done.payload.project_user_ids == ["pu-2", "pu-7"], "the project's users come with it"
    evs = await linking.quiet()
    add_users = linking.of("pm.project.add_users", evs)
    assert [(u.user_id, u.role, u.permissions) for u in add_users[0].payload.users] == [("pu-4", "contractor", ["add_task"])]
    update = linking.of("pm.project.update", evs)[0].payload
    assert (update.project_id, update.owner_id, update.new_group_name) == ("proj-1", "pu-2", "Key accounts")
    assert {add_users[0].payload.command_id, update.command_id} == set(done.payload.command_ids)
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-1"]

    again = associate("u-2", "proj-1")
    await linking.request(again)
    r = await linking.one("linking.request.refused", lambda e: e.payload.request_id == again.request_id)
    assert r.payload.reason_code == "already_linked"

    listing2 = listing.model_copy(update={"request_id": uuid.uuid4()})
    await linking.request(listing2)
    listed = await linking.one("linking.associable_projects.listed", lambda e: e.payload.request_id == listing2.request_id)
    assert [p.project_id for p in listed.payload.projects] == ["proj-3"], "already linked projects are not offered"

    await linking.request(requests.ProjectDissociate(request_id=uuid.uuid4(), acting_user_id="u-2",
                                                     record_type="account", record_id="acc-1", project_id="proj-1"))
    await linking.one("linking.link.changed", lambda e: not e.payload.linked)
    assert await linking.projects_of(key, "account", "acc-1") == []

    re = associate("u-2", "proj-1")
    await linking.request(re)
    relinked = await linking.one("linking.link.changed", lambda e: e.payload.linked and e.payload.revision == 3)
    assert relinked.payload.project_id == "proj-1"
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-1"]


async def test_S4_client_users_from_contact_or_chosen_among_account_contacts(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.account("acc-2", "Globex")
    await linking.contact("con-1", "acc-1", "hanako@acme.example")
    await linking.contact("con-2", "acc-1", "jiro@acme.example")
    await linking.contact("con-3", "acc-1", "moved@acme.example")
    await linking.contact("con-9", "acc-2", "x@globex.example")
    await linking.project("proj-1", users=["pu-admin"])
    await linking.project("proj-2", users=["pu-admin"])
    for kind, crm_id, pm_id in (("account", "acc-1", "cc-1"), ("contact", "con-1", "cu-1"), ("contact", "con-3", "cu-3")):
        await linking.send(identity.CustomerMappingChanged(portal_id="p-1", kind=kind, crm_id=crm_id, pm_id=pm_id,  # type: ignore[arg-type]
                                                           state="linked", revision=1), key=f"map:{crm_id}", origin="hub")
    await linking.client_user("cu-1", "hanako@acme.example", "cc-1")
    await linking.client_user("cu-3", "moved@acme.example", "cc-other")
    await linking.settled()
    await linking.enable()
    await linking.settled()

    other_company = associate("u-admin", "proj-1", client_contact_ids=["con-3"])
    await linking.request(other_company)
    r = await linking.one("linking.request.refused", lambda e: e.payload.request_id == other_company.request_id)
    assert r.payload.reason_code == "contact_in_other_company" and "one client company" in r.payload.reason

    not_offered = associate("u-admin", "proj-1", client_contact_ids=["con-9"])
    await linking.request(not_offered)
    r = await linking.one("linking.request.refused", lambda e: e.payload.request_id == not_offered.request_id)
    assert r.payload.reason_code == "contact_not_offered" and "con-9" in r.payload.reason

    chosen = associate("u-admin", "proj-1", client_contact_ids=["con-1", "con-2"])
    await linking.request(chosen)
    await linking.one("linking.project.associated", lambda e: e.payload.request_id == chosen.request_id)
    create = await linking.one("pm.client_user.create")
    assert (create.payload.crm_record_id, create.payload.client_company_id) == ("con-2", "cc-1")
    added = await linking.one("pm.project.add_client_users")
    assert added.payload.client_user_ids == ["cu-1"]
    # The PM tool creates con-2's client user: the hub then adds it to the project.
    await linking.client_user("cu-2", "jiro@acme.example", "cc-1", command_id=create.payload.command_id)
    await linking.one("pm.project.add_client_users", lambda e: e.payload.client_user_ids == ["cu-2"])

    from_contact = associate("u-admin", "proj-2", record_type="contact", record_id="con-1")
    await linking.request(from_contact)
    await linking.one("pm.project.add_client_users", lambda e: e.payload.project_id == "proj-2"
                      and e.payload.client_user_ids == ["cu-1"])


async def test_S16_many_to_many_links_both_directions(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.account("acc-2", "Globex")
    await linking.deal("deal-1", "acc-1")
    await linking.lead("lead-1")
    await linking.contact("con-1", "acc-1", "a@acme.example")
    await linking.send(identity.CustomerMappingChanged(portal_id="p-1", kind="account", crm_id="acc-1", pm_id="cc-1",
                                                       state="linked", revision=1), key="map:acc-1", origin="hub")
    await linking.project("proj-1", users=["pu-admin"])
    await linking.project("proj-2", users=["pu-admin"])
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    for rt, rid in (("account", "acc-1"), ("account", "acc-2"), ("deal", "deal-1"), ("lead", "lead-1"), ("contact", "con-1")):
        await linking.request(associate("u-admin", "proj-1", record_type=rt, record_id=rid))
    await linking.request(associate("u-admin", "proj-2", record_type="account", record_id="acc-1"))
    await linking.wait_for(lambda es: len(linking.of("linking.link.changed", es)) == 6)
    assert sorted((r["record_type"], r["record_id"]) for r in await linking.records_of(key, "proj-1")) == [
        ("account", "acc-1"), ("account", "acc-2"), ("contact", "con-1"), ("deal", "deal-1"), ("lead", "lead-1")]
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-1", "proj-2"]
    assert [p["project_id"] for p in await linking.projects_of(key, "lead", "lead-1")] == ["proj-1"]


async def test_S9_group_created_with_the_project_and_echo_links_it(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    req = requests.ProjectCreateFromRecord(request_id=uuid.uuid4(), acting_user_id="u-admin", record_type="account",
                                           record_id="acc-1", name="Acme support", new_group_name="Support 2024")
    await linking.request(req)
    create = await linking.one("pm.project.create")
    assert (create.payload.name, create.payload.new_group_name, create.payload.group_id) == ("Acme support", "Support 2024", None)
    assert [(r.record_type, r.record_id) for r in create.payload.linked_records] == [("account", "acc-1")]
    # Edit: put an existing project into a new group.
    await linking.project("proj-1", users=["pu-admin"])
    await linking.settled()
    await linking.request(associate("u-admin", "proj-1", new_group_name="Key accounts"))
    upd = await linking.one("pm.project.update")
    assert (upd.payload.project_id, upd.payload.new_group_name) == ("proj-1", "Key accounts")
    # The PM tool applied the create: the echo carries the command id and the project gets linked.
    await linking.project("proj-new", users=["pu-admin"], command_id=create.payload.command_id)
    await linking.one("linking.link.changed", lambda e: e.payload.project_id == "proj-new")
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-1", "proj-new"]


async def test_S19_duplicate_contact_emails_refuse_the_whole_creation(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.contact("con-1", "acc-1", "Shared@acme.example", last="Sato")
    await linking.contact("con-2", "acc-1", "shared@acme.example ".strip(), last="Suzuki")
    await linking.contact("con-3", "acc-1", "own@acme.example")
    await linking.settled()
    await linking.enable()
    req = requests.ProjectCreateFromRecord(request_id=uuid.uuid4(), acting_user_id="u-admin", record_type="account",
                                           record_id="acc-1", name="Acme support")
    await linking.request(req)
    refusal = await linking.one("linking.request.refused")
    assert refusal.payload.reason_code == "duplicate_email"
    assert "shared@acme.example" in refusal.payload.reason and "con-1" in refusal.payload.reason and "con-2" in refusal.payload.reason
    note = await linking.one("notification.requested", lambda e: e.payload.kind == "duplicate_client_emails")
    assert note.payload.recipient.email == "u-admin@example.com"
    assert note.payload.recipient.time_zone == "America/New_York"  # the user's own, for the times in the mail
    # the mail names the account and the contacts, and carries the reason as a code (worded in the reader's language)
    assert (note.payload.data["account_name"], note.payload.data["reason_code"]) == ("Acme", "duplicate_email")
    assert {c["name"] for c in note.payload.data["contacts"]} == {"Sato", "Suzuki"}
    evs = await linking.quiet()
    assert not linking.of("pm.project.create", evs), "nothing is half-created"


MAPPING = [
    {"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"},
    {"pm_field": "budget", "crm_module": "deals", "crm_field": "Amount"},
    {"pm_field": "kind", "crm_module": "deals", "crm_field": "Project_Type"},
    {"pm_field": "region", "crm_module": "accounts", "crm_field": "Region"},
]


async def test_S14_won_deal_creates_exactly_one_project(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme", custom={"Region": "Kanto"})
    await linking.deal("deal-1", "acc-1", custom={"Project_Type": "Rollout"}, version=1)
    await linking.settled()
    key = await linking.new_key()
    await linking.enable(mapping=MAPPING, deal_won=True)
    await linking.settled()
    await linking.deal("deal-1", "acc-1", custom={"Project_Type": "Rollout"}, won=True, version=2)
    create = await linking.one("pm.project.create")
    assert create.payload.name == "Deal deal-1"
    assert create.payload.custom_fields == {"budget": 1200.5, "kind": "Rollout", "region": "Kanto"}
    assert [(r.record_type, r.record_id) for r in create.payload.linked_records] == [("deal", "deal-1"), ("account", "acc-1")]
    await linking.deal("deal-1", "acc-1", custom={"Project_Type": "Rollout"}, won=True, version=3)  # repeated "won"
    await linking.deal("deal-1", "acc-1", custom={"Project_Type": "Rollout"}, won=False, version=1)  # stale
    await linking.deal("deal-1", "acc-1", custom={"Project_Type": "Rollout"}, won=True, version=2)  # redelivered copy
    evs = await linking.quiet(2.0)
    assert len(linking.of("pm.project.create", evs)) == 1
    await linking.project("proj-d", users=["pu-admin"], command_id=create.payload.command_id)
    await linking.wait_for(lambda es: len(linking.of("linking.link.changed", es)) == 2)
    assert [p["project_id"] for p in await linking.projects_of(key, "deal", "deal-1")] == ["proj-d"]
    assert [p["project_id"] for p in await linking.projects_of(key, "account", "acc-1")] == ["proj-d"]


async def test_S14_not_turned_on_creates_nothing(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.settled()
    await linking.enable(mapping=MAPPING[:2], deal_won=False)
    await linking.settled()
    await linking.deal("deal-1", None, won=True, version=1)
    evs = await linking.quiet(2.0)
    assert not linking.of("pm.project.create", evs)


async def test_S21_S22_matching_links_matches_and_reports_once(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme Inc.")
    await linking.account("acc-2", "Globex")
    await linking.account("acc-3", "GLOBEX Corporation")
    await linking.account("acc-4", "Initech")
    await linking.contact("con-1", "acc-1", "Hanako@Acme.example")
    await linking.send(identity.CustomerMappingChanged(portal_id="p-1", kind="account", crm_id="acc-4", pm_id="cc-old",
                                                       state="linked", revision=1), key="map:acc-4", origin="hub")
    await linking.company("cc-1", "ＡＣＭＥ 株式会社")
    await linking.company("cc-2", "Globex Inc")
    await linking.company("cc-3", "Umbrella")
    await linking.company("cc-4", "Initech")
    await linking.client_user("cu-1", "hanako@acme.example", "cc-1")
    await linking.project("proj-1", companies=["cc-1"], client_users=["cu-1"], progress=10)
    await linking.project("proj-2", companies=["cc-2"])
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    note = await linking.one("notification.requested", lambda e: e.payload.kind == "matching_report")
    summary = note.payload.matching_report
    assert note.payload.recipient.user_id == "u-admin"
    assert (summary.matched, summary.unmatched, summary.pages) == (1, 3, 1)
    [page] = [e.payload.rows for e in linking.of("notification.report_page")
              if e.payload.request_id == note.payload.request_id]
    linking_page = (await linking.one("linking.matching.page")).payload  # its own topic: may be read after the request
    assert len(linking.of("linking.matching.page")) == 1
    assert linking_page.rows == page and linking_page.report_id == summary.report_id
    report = page
    assert [(m.client_company_id, m.account_id) for m in report.matched] == [("cc-1", "acc-1")]
    unmatched = {u.client_company_id: u for u in report.unmatched}
    assert {k: u.reason_code for k, u in unmatched.items()} == {"cc-2": "ambiguous", "cc-3": "no_match", "cc-4": "error"}
    assert "acc-2" in unmatched["cc-2"].reason and "acc-3" in unmatched["cc-2"].reason
    assert "already paired" in unmatched["cc-4"].reason
    evs = await linking.quiet()
    assert len(linking.of("notification.requested", evs)) == 1, "one report at the end"
    assert len(linking.of("linking.matching.completed", evs)) == 1
    links = sorted((e.payload.project_id, e.payload.record.record_type, e.payload.record.record_id)
                   for e in linking.of("linking.link.changed", evs))
    assert links == [("proj-1", "account", "acc-1"), ("proj-1", "contact", "con-1")]
    assert [p["project_id"] for p in await linking.projects_of(key, "contact", "con-1")] == ["proj-1"]


async def test_S2_read_api_shows_status_and_progress_and_drops_stale_updates(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.project("proj-1", users=["pu-admin"], status="active", progress=10, version=1)
    await linking.settled()
    key = await linking.new_key()
    await linking.enable()
    await linking.request(associate("u-admin", "proj-1"))
    await linking.one("linking.link.changed")
    await linking.project("proj-1", users=["pu-admin"], status="completed", progress=100, version=3)
    await linking.project("proj-1", users=["pu-admin"], status="on_hold", progress=50, version=2)  # stale
    await linking.settled()
    projects = await linking.projects_of(key, "account", "acc-1")
    assert [(p["project_id"], p["status"], p["progress_percent"]) for p in projects] == [("proj-1", "completed", 100)]
    records = await linking.records_of(key, "proj-1")
    assert [(r["record_type"], r["record_id"], r["name"]) for r in records] == [("account", "acc-1", "Acme")]
    assert (await linking.http.get("/api/v1/records/task/x/projects", headers={"Authorization": f"Bearer {key}"})).status_code == 422  # the path model names the record types
    spec = (await linking.http.get("/api/v1/openapi.json")).json()
    assert "/api/v1/records/{record_type}/{record_id}/projects" in spec["paths"]
