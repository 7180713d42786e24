"""Every pm.commands type carried out against the fake Zoho Projects over HTTP (S4, S9, S13, S14, S18, S19),
through the real broker and database: echoes carry the command id, retries create nothing twice, refusals
come back as pm.command.rejected."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pm_harness import ORG, PORTAL, pm_connector, seed

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import make_event, topics
from hub_schema.events import commands as cmd

pytestmark = pytest.mark.integration

KEY = "project:acme"  # one key, one partition: the commands are handled in the order sent


def command(payload: Any) -> Any:
    return make_event(payload, org_id=ORG, entity_key=KEY, producer="linking", origin="hub", event_id=uuid.uuid4())


def of(records: list[Any], command_id: uuid.UUID) -> dict[str, list[Any]]:
    """The distinct events (by id) that carry `command_id`, by type."""
    out: dict[str, list[Any]] = {}
    for e in {e.event_id: e for e in envelopes(records)}.values():
        if getattr(e.payload, "command_id", None) == command_id:
            out.setdefault(e.event_type, []).append(e.payload)
    return out


async def test_project_with_new_group_client_company_and_client_users_is_created_once(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with pm_connector(hub_env) as pm:
        world = seed(pm.fake)
        out = await kafka_probe.reader(topics.PM_INGEST)
        acme = world["client"]["id"]
        create = cmd.PmProjectCreate(
            command_id=uuid.uuid4(), portal_id=PORTAL, name="Globex rollout", description="From the won deal",
            custom_fields={"Deal_Amount": 1200}, owner_id="pu-1", new_group_name="Globex",
            users=[cmd.ProjectUserGrant(user_id="pu-1", role="manager", permissions=["add_task"])],
            linked_records=[{"record_type": "deal", "record_id": "d-1"}],
            new_client_company=cmd.NewClientCompany(name="Globex Corp", crm_account_id="a-2"),
            new_client_users=[cmd.NewClientUser(email="gina@globex.example", name="Gina", crm_contact_id="c-1"),
                              cmd.NewClientUser(email="otto@acme.example", name="Otto", crm_contact_id="c-2", client_company_id=acme)])
        taken = cmd.PmProjectCreate(  # S19: the whole command is refused, nothing of it created
            command_id=uuid.uuid4(), portal_id=PORTAL, name="Never", new_client_company=cmd.NewClientCompany(name="Never Corp", crm_account_id="a-3"),
            new_client_users=[cmd.NewClientUser(email="GINA@globex.example", name="Gina again", crm_contact_id="c-3")])
        for c in (create, create, taken):
            await kafka_probe.send(command(c))
        every_echo = {"pm.client_company.upserted", "pm.client_user.upserted", "pm.project.upserted", "pm.project_group.upserted"}
        # the echoes are keyed by what they describe (several partitions, any order): wait for every one
        records = await kafka_probe.collect(out, lambda rs: bool(of(rs, taken.command_id)) and every_echo <= set(of(rs, create.command_id)))

        echo = of(records, create.command_id)
        assert sorted(echo) == ["pm.client_company.upserted", "pm.client_user.upserted", "pm.project.upserted", "pm.project_group.upserted"]
        project = echo["pm.project.upserted"][0]
        (group,), (company,) = echo["pm.project_group.upserted"], echo["pm.client_company.upserted"]
        users = {u.email: u for u in echo["pm.client_user.upserted"]}
        assert (group.name, company.name) == ("Globex", "Globex Corp")
        assert {e: u.client_company_id for e, u in users.items()} == {"gina@globex.example": company.id, "otto@acme.example": acme}
        assert (project.name, project.group_id, project.owner_id, project.custom_fields) == ("Globex rollout", group.id, "pu-1", {"Deal_Amount": 1200})
        assert sorted(project.client_company_ids) == sorted([company.id, acme])
        assert sorted(project.client_user_ids) == sorted(u.id for u in users.values())
        # the retry created nothing: one of each in the fake Projects
        names = [r["name"] for kind in ("projects", "clients", "projectgroups") for r in pm.fake.pm[kind].values()]
        assert sorted(names) == ["Acme Corp", "Globex", "Globex Corp", "Globex rollout", "Rollout"]
        refusal = of(records, taken.command_id)["pm.command.rejected"][0]
        assert refusal.reason_code == "duplicate_email"
        assert "Never Corp" not in names


async def test_members_companies_users_and_portal_users_commands(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with pm_connector(hub_env) as pm:
        world = seed(pm.fake)
        project, acme = world["project"]["id"], world["client"]["id"]
        pm.fake.ui_pm("users", {"id": "pu-2", "portal_id": PORTAL, "email": "bob@example.com", "name": "Bob", "role": {"name": "employee"}})
        out = await kafka_probe.reader(topics.PM_INGEST)
        rename = cmd.PmClientCompanyUpdate(command_id=uuid.uuid4(), portal_id=PORTAL, client_company_id=acme, name="Acme Corporation")
        client = cmd.PmClientUserCreate(command_id=uuid.uuid4(), portal_id=PORTAL, client_company_id=acme, email="cleo@acme.example",
                                        name="Cleo", crm_record_type="contact", crm_record_id="c-9")
        company = cmd.PmClientCompanyCreate(command_id=uuid.uuid4(), portal_id=PORTAL, name="Initech", crm_account_id="a-9")
        grant = cmd.PmProjectAddUsers(command_id=uuid.uuid4(), portal_id=PORTAL, project_id=project,
                                      users=[cmd.ProjectUserGrant(user_id="pu-2", role="employee", permissions=["add_task"])])
        invite = cmd.PmPortalUserInvite(command_id=uuid.uuid4(), portal_id=PORTAL, crm_user_id="u-7", email="dora@example.com", name="Dora",
                                        role="employee", permissions=["add_task"])
        again = cmd.PmPortalUserInvite(command_id=uuid.uuid4(), portal_id=PORTAL, crm_user_id="u-8", email="ada@example.com", name="Ada",
                                       role="employee", permissions=[])
        gone = cmd.PmPortalUserDeactivate(command_id=uuid.uuid4(), portal_id=PORTAL, user_id="pu-2", crm_user_id="u-2")
        missing = cmd.PmProjectUpdate(command_id=uuid.uuid4(), portal_id=PORTAL, project_id="404", name="Nope")
        group = cmd.PmProjectGroupCreate(command_id=uuid.uuid4(), portal_id=PORTAL, name="Key accounts")
        for c in (rename, client, company, grant, invite, again, gone, group, missing):
            await kafka_probe.send(command(c))
        # the echoes are keyed by what they describe, so they arrive on several partitions in any order: wait for each
        sent = (rename, client, company, grant, invite, again, gone, group, missing)
        records = await kafka_probe.collect(out, lambda rs: all(of(rs, c.command_id) for c in sent))

        assert of(records, rename.command_id)["pm.client_company.upserted"][0].name == "Acme Corporation"
        cleo = of(records, client.command_id)["pm.client_user.upserted"][0]
        assert (cleo.email, cleo.client_company_id) == ("cleo@acme.example", acme)
        assert of(records, company.command_id)["pm.client_company.upserted"][0].name == "Initech"
        assert "pu-2" in of(records, grant.command_id)["pm.project.upserted"][0].user_ids
        dora = of(records, invite.command_id)["pm.portal_user.upserted"][0]
        assert (dora.email, dora.role, dora.active) == ("dora@example.com", "employee", True)
        assert of(records, again.command_id)["pm.command.rejected"][0].reason_code == "duplicate_email"
        bob = of(records, gone.command_id)["pm.portal_user.upserted"][0]
        assert (bob.id, bob.active) == ("pu-2", False)
        assert of(records, group.command_id)["pm.project_group.upserted"][0].name == "Key accounts"
        assert of(records, missing.command_id)["pm.command.rejected"][0].reason_code == "not_found"

        # the client user then moves and is renamed
        move = cmd.PmClientUserUpdate(command_id=uuid.uuid4(), portal_id=PORTAL, client_user_id=cleo.id, name="Cleo B.",
                                      client_company_id=of(records, company.command_id)["pm.client_company.upserted"][0].id)
        add = cmd.PmProjectAddClientUsers(command_id=uuid.uuid4(), portal_id=PORTAL, project_id=project, client_user_ids=[cleo.id])
        for c in (move, add):
            await kafka_probe.send(command(c))
        records = await kafka_probe.collect(out, lambda rs: bool(of(rs, move.command_id)) and bool(of(rs, add.command_id)))
        moved = of(records, move.command_id)["pm.client_user.upserted"][0]
        assert (moved.name, moved.client_company_id) == ("Cleo B.", move.client_company_id)
        added = of(records, add.command_id)["pm.project.upserted"][0]
        assert cleo.id in added.client_user_ids and move.client_company_id in added.client_company_ids


async def test_deletions_in_projects_are_published_by_the_sweep(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with pm_connector(hub_env) as pm:
        world = seed(pm.fake)
        out = await kafka_probe.reader(topics.PM_INGEST)
        await pm.connector.poll(ORG)
        assert await pm.connector.sweep(ORG) == 0, "nothing deleted yet"
        del pm.fake.pm["tasks"][world["task"]["id"]]
        del pm.fake.pm["clients"][world["client"]["id"]]
        assert await pm.connector.sweep(ORG) == 2
        assert await pm.connector.sweep(ORG) == 0, "a deletion is published once"
        records = await kafka_probe.collect(out, lambda rs: len(envelopes(rs, "pm.task.deleted")) and len(envelopes(rs, "pm.client_company.deleted")))
        task = envelopes(records, "pm.task.deleted")[0].payload
        assert (task.id, task.project_id, task.portal_id, task.version) == (world["task"]["id"], world["project"]["id"], PORTAL, 2)
        assert envelopes(records, "pm.client_company.deleted")[0].payload.id == world["client"]["id"]


async def test_a_project_creation_that_failed_half_way_goes_on_without_creating_anything_twice(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """The client company and client user went in, then Projects failed the project call more often than the
    client retries: the handler fails, the platform runs the command again, and the steps already done are skipped."""
    async with pm_connector(hub_env) as pm:
        seed(pm.fake)
        out = await kafka_probe.reader(topics.PM_INGEST)
        pm.fake.limits.fail_paths[f"POST /api/v3/portal/{PORTAL}/projects"] = 5  # the client tries 4 times per run
        create = cmd.PmProjectCreate(command_id=uuid.uuid4(), portal_id=PORTAL, name="Initech rollout",
                                     new_client_company=cmd.NewClientCompany(name="Initech", crm_account_id="a-7"),
                                     new_client_users=[cmd.NewClientUser(email="peter@initech.example", name="Peter", crm_contact_id="c-7")])
        await kafka_probe.send(command(create))
        echoes = {"pm.project.upserted", "pm.client_company.upserted", "pm.client_user.upserted"}
        records = await kafka_probe.collect(out, lambda rs: echoes <= set(of(rs, create.command_id)), timeout=90)
        echo = of(records, create.command_id)
        assert pm.fake.limits.fail_paths[f"POST /api/v3/portal/{PORTAL}/projects"] == 0, "every failure was met"
        assert [c["name"] for c in pm.fake.pm["clients"].values()].count("Initech") == 1
        assert [u.get("email") for u in pm.fake.pm["users"].values()].count("peter@initech.example") == 1
        assert [p["name"] for p in pm.fake.pm["projects"].values()].count("Initech rollout") == 1
        project = echo["pm.project.upserted"][0]
        assert project.client_company_ids == [echo["pm.client_company.upserted"][0].id]
        assert project.client_user_ids == [echo["pm.client_user.upserted"][0].id]


async def test_the_poll_that_sees_a_record_before_its_echo_publishes_it_as_the_commands_echo(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """The background poll may read a task the connector just created before the handler published its echo:
    published without the command id, the hub would take it for a person's new task and mirror it back."""
    from hub_zoho import state

    async with pm_connector(hub_env) as pm:
        world = seed(pm.fake)
        out = await kafka_probe.reader(topics.PM_INGEST)
        marked_by = uuid.uuid4()  # the create call went through (the task carries its marker), the echo is not out yet
        task = pm.fake.ui_pm("tasks", {"portal_id": PORTAL, "project_id": world["project"]["id"], "name": "Mirrored",
                                       "status": {"name": "Open"}, "add_to_crm": True, "hub_command_id": str(marked_by)})
        stepped_by = uuid.uuid4()  # a client company a project creation's step made (no marker field on clients)
        client = pm.fake.ui_pm("clients", {"portal_id": PORTAL, "name": "Stepped Corp"})
        await state.record_command(pm.connector.pool, command_id=uuid.uuid5(stepped_by, "client_company"), org_id=ORG,
                                   command_type="pm.project.create#client_company", module="clients", record_id=client["id"],
                                   outcome="applied", parent_command_id=stepped_by)
        await pm.connector.poll(ORG)
        records = await kafka_probe.collect(out, lambda rs: bool(of(rs, marked_by)) and bool(of(rs, stepped_by)))
        assert of(records, marked_by)["pm.task.upserted"][0].id == task["id"]
        assert of(records, stepped_by)["pm.client_company.upserted"][0].id == client["id"]
        others = [e for e in envelopes(records, "pm.task.upserted") if e.payload.id == task["id"] and e.payload.command_id is None]
        assert others == [], "never published as a person's task"
