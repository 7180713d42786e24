"""The sandbox through the real broker and database: commands in, change events and rejections out.

Setup goes through SandboxClient (a person in the UI); the hub's side is played
by kafka_probe sending commands on pm.commands / crm.commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import pytest
import uvicorn

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes, running
from hub_sandbox.client import SandboxClient, SandboxHttpClient
from hub_sandbox.domain import Rejected
from hub_sandbox.main import build
from hub_sandbox.settings import SandboxSettings
from hub_schema import Payload, make_event, topics
from hub_schema.events import commands as cmd
from hub_schema.events.commands import NewClientCompany, NewClientUser

pytestmark = pytest.mark.integration

ORG = "org-1"
PORTAL = "portal-1"


@contextlib.asynccontextmanager
async def sandbox(env: HubEnv) -> AsyncIterator[tuple[Any, SandboxClient]]:
    service = build(env.settings(SandboxSettings, "sandbox"))
    async with running(service):
        yield service, SandboxClient.of(service, org_id=ORG, acting_user_id="u-1")


def command(payload: Payload, key: str) -> Any:
    return make_event(payload, org_id=ORG, entity_key=key, producer="tasks", origin="hub")


def with_command(records: list[Any], command_id: uuid.UUID, event_type: str | None = None) -> list[Any]:
    return [e for e in envelopes(records, event_type) if str(e.envelope.payload.get("command_id")) == str(command_id)]


async def pm_world(sb: SandboxClient, *, schedule_fixed: bool = False) -> dict[str, Any]:
    await sb.pm.upsert_portal(PORTAL, name="Acme portal", plan="paid")
    owner = await sb.pm.upsert_portal_user("pu-1", portal_id=PORTAL, email="owner@pm.example", name="Owner")
    project = await sb.pm.upsert_project("proj-1", portal_id=PORTAL, name="Rollout", owner_id=owner["id"], schedule_fixed=schedule_fixed)
    return {"project": project}


async def count(env: HubEnv, sql: str, *args: Any) -> int:
    base, _, _ = env.admin_dsn.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{env.database}")
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def task_create(**over: Any) -> cmd.PmTaskCreate:
    fields = dict(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id="proj-1", title="Kick-off",
                  priority="high", status="open", due_date=date(2026, 12, 1))
    return cmd.PmTaskCreate(**{**fields, **over})


async def test_pm_task_create_echoes_upserted_with_command_id_and_version_1_once(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        out = await kafka_probe.reader(topics.PM_INGEST)
        first = task_create()
        sent = command(first, "task:hub-1")
        await kafka_probe.send(sent)
        await kafka_probe.send(sent)  # redelivery: the inbox absorbs it
        await kafka_probe.send(command(first, "task:hub-1"))  # same command id, new envelope: the ledger absorbs it
        marker = task_create(title="Marker")
        await kafka_probe.send(command(marker, "task:hub-1"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, marker.command_id)), settle=1.0)
        counters = await sb.counters()
        tasks = await sb.pm.list("task")
    echoes = with_command(records, first.command_id)
    assert [e.event_type for e in echoes] == ["pm.task.upserted"]
    echo = echoes[0]
    assert echo.payload.version == 1 and echo.payload.title == "Kick-off" and echo.payload.due_date == date(2026, 12, 1)
    assert echo.envelope.origin == "pm" and echo.envelope.causation_id == sent.event_id
    assert echo.envelope.correlation_id == sent.correlation_id
    assert sorted(t["title"] for t in tasks) == ["Kick-off", "Marker"]
    assert counters["command_applied"] == {"pm.task.create": 2}
    assert counters["command_duplicate"] == {"pm.task.create": 1}


async def test_S10_reopening_subtask_of_closed_parent_is_rejected(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        parent = await sb.pm.upsert_task(project_id="proj-1", title="Parent", status="closed")
        sub = await sb.pm.upsert_task(project_id="proj-1", title="Sub", status="closed", parent_task_id=parent["id"])
        out = await kafka_probe.reader(topics.PM_INGEST)
        reopen = cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id="proj-1",
                                  task_id=sub["id"], base_version=sub["version"], changes=[{"field": "status", "value": "open"}])
        await kafka_probe.send(command(reopen, f"task:{sub['id']}"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, reopen.command_id)), settle=1.0)
        after = await sb.pm.get("task", sub["id"])
    answers = with_command(records, reopen.command_id)
    assert [e.event_type for e in answers] == ["pm.command.rejected"]
    assert answers[0].payload.reason_code == "parent_task_closed"
    assert answers[0].payload.command_type == "pm.task.update"
    assert after is not None and after["status"] == "closed" and after["version"] == sub["version"]


async def test_S11_due_date_change_in_fixed_schedule_project_is_rejected(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb, schedule_fixed=True)
        task = await sb.pm.upsert_task(project_id="proj-1", title="Fixed", due_date=date(2026, 12, 1))
        out = await kafka_probe.reader(topics.PM_INGEST)
        move = cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id="proj-1",
                                task_id=task["id"], base_version=1, changes=[{"field": "due_date", "value": date(2026, 12, 24)}])
        rename = cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=move.hub_task_id, portal_id=PORTAL, project_id="proj-1",
                                  task_id=task["id"], base_version=1, changes=[{"field": "title", "value": "Renamed"}])
        await kafka_probe.send(command(move, f"task:{task['id']}"))
        await kafka_probe.send(command(rename, f"task:{task['id']}"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, rename.command_id)), settle=1.0)
        after = await sb.pm.get("task", task["id"])
    refused = with_command(records, move.command_id)
    assert [(e.event_type, e.payload.reason_code) for e in refused] == [("pm.command.rejected", "schedule_fixed")]
    renamed = with_command(records, rename.command_id, "pm.task.upserted")
    assert renamed[0].payload.version == 2 and renamed[0].payload.due_date == date(2026, 12, 1)
    assert after is not None and after["title"] == "Renamed" and after["due_date"] == "2026-12-01"


async def test_version_conflict_when_base_version_is_behind(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        task = await sb.pm.upsert_task(project_id="proj-1", title="T")
        await sb.pm.update_task(task["id"], priority="low")  # a person changed it: version 2
        out = await kafka_probe.reader(topics.PM_INGEST)
        stale = cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id="proj-1",
                                 task_id=task["id"], base_version=1, changes=[{"field": "title", "value": "Stale"}])
        await kafka_probe.send(command(stale, f"task:{task['id']}"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, stale.command_id)))
    assert with_command(records, stale.command_id)[0].payload.reason_code == "version_conflict"


async def test_S19_duplicate_client_user_email_is_rejected(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        company = await sb.pm.upsert_client_company(portal_id=PORTAL, name="Acme")
        await sb.pm.upsert_client_user(client_company_id=company["id"], email="hanako@acme.example", name="Hanako")
        with pytest.raises(Rejected) as ui_refusal:  # the PM UI refuses it too
            await sb.pm.upsert_client_user(client_company_id=company["id"], email="HANAKO@acme.example", name="Other")
        out = await kafka_probe.reader(topics.PM_INGEST)
        create = cmd.PmClientUserCreate(command_id=uuid.uuid4(), portal_id=PORTAL, client_company_id=company["id"],
                                        email="Hanako@Acme.example", name="Hanako S", crm_record_type="contact", crm_record_id="con-1")
        await kafka_probe.send(command(create, "contact:con-1"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, create.command_id)), settle=1.0)
        client_users = await sb.pm.list("client_user")
    assert ui_refusal.value.code == "duplicate_email"
    answers = with_command(records, create.command_id)
    assert [(e.event_type, e.payload.reason_code) for e in answers] == [("pm.command.rejected", "duplicate_email")]
    assert len(client_users) == 1


async def test_S19_project_create_with_shared_contact_email_creates_nothing(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        out = await kafka_probe.reader(topics.PM_INGEST)
        bad = cmd.PmProjectCreate(
            command_id=uuid.uuid4(), portal_id=PORTAL, name="From Acme", new_group_name="Customers",
            new_client_company=NewClientCompany(name="Acme", crm_account_id="acc-1"),
            new_client_users=[NewClientUser(email="info@acme.example", name="Hanako", crm_contact_id="con-1"),
                              NewClientUser(email="INFO@acme.example", name="Taro", crm_contact_id="con-2")],
        )
        good = bad.model_copy(update={"command_id": uuid.uuid4(), "new_client_users": bad.new_client_users[:1]})
        await kafka_probe.send(command(bad, "account:acc-1"))
        await kafka_probe.send(command(good, "account:acc-1"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, good.command_id, "pm.project.upserted")), settle=1.0)
    refused = with_command(records, bad.command_id)
    assert [e.event_type for e in refused] == ["pm.command.rejected"]
    assert refused[0].payload.reason_code == "duplicate_email"
    assert "con-1" in refused[0].payload.reason and "con-2" in refused[0].payload.reason
    created = {e.event_type: e.payload for e in with_command(records, good.command_id)}  # different keys: partitions
    assert sorted(created) == ["pm.client_company.upserted", "pm.client_user.upserted", "pm.project.upserted",
                               "pm.project_group.upserted"]
    project = created["pm.project.upserted"]
    assert project.group_id == created["pm.project_group.upserted"].id
    assert project.client_user_ids == [created["pm.client_user.upserted"].id]
    assert project.client_company_ids == [created["pm.client_company.upserted"].id]
    assert await count(hub_env, "SELECT count(*) FROM sandbox.records WHERE kind = 'project'") == 2  # proj-1 + the good one
    assert await count(hub_env, "SELECT count(*) FROM sandbox.records WHERE kind = 'client_company'") == 1


async def test_S4_contact_in_another_client_company_is_rejected(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        a = await sb.pm.upsert_client_company(portal_id=PORTAL, name="A")
        b = await sb.pm.upsert_client_company(portal_id=PORTAL, name="B")
        out = await kafka_probe.reader(topics.PM_INGEST)
        first = cmd.PmClientUserCreate(command_id=uuid.uuid4(), portal_id=PORTAL, client_company_id=a["id"], email="k@x.example",
                                       name="K", crm_record_type="contact", crm_record_id="con-7")
        second = first.model_copy(update={"command_id": uuid.uuid4(), "client_company_id": b["id"], "email": "k2@x.example"})
        await kafka_probe.send(command(first, "contact:con-7"))
        await kafka_probe.send(command(second, "contact:con-7"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, second.command_id)))
    assert with_command(records, first.command_id)[0].event_type == "pm.client_user.upserted"
    refused = with_command(records, second.command_id)[0]
    assert refused.event_type == "pm.command.rejected" and refused.payload.details["rule"] == "one_client_company"


async def test_crm_commands_create_task_and_note_with_origin_crm(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        deal = await sb.crm.upsert_deal(name="Acme rollout", won=True)
        out = await kafka_probe.reader(topics.CRM_INGEST)
        create = cmd.CrmTaskCreate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), record_type="deal", record_id=deal["id"],
                                   subject="From PM", priority="low", status="open")
        note = cmd.CrmNoteAdd(command_id=uuid.uuid4(), hub_task_id=create.hub_task_id, pm_comment_id="pc-1", record_type="deal",
                              record_id=deal["id"], body="Looks good", author_name="PM person")
        missing = note.model_copy(update={"command_id": uuid.uuid4(), "record_id": "nope"})
        for c in (create, note, missing):
            await kafka_probe.send(command(c, f"deal:{deal['id']}"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, missing.command_id)))
    task = with_command(records, create.command_id)[0]
    assert task.event_type == "crm.task.upserted" and task.envelope.origin == "crm" and task.payload.version == 1
    assert with_command(records, note.command_id)[0].event_type == "crm.note.created"
    refused = with_command(records, missing.command_id)[0]
    assert refused.event_type == "crm.command.rejected" and refused.payload.reason_code == "not_found"


async def test_ui_change_publishes_change_event_with_incremented_version(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        crm_out = await kafka_probe.reader(topics.CRM_INGEST)
        pm_out = await kafka_probe.reader(topics.PM_INGEST)
        account = await sb.crm.upsert_account(name="Acme")
        task = await sb.crm.upsert_task(record_type="account", record_id=account["id"], subject="Call", add_to_pm=True)
        changed = await sb.crm.update_task(task["id"], status="closed")
        await pm_world(sb)
        pm_task = await sb.pm.upsert_task(project_id="proj-1", title="Design", add_to_crm=True)
        await sb.pm.update_task(pm_task["id"], status="closed")
        crm_records = await kafka_probe.collect(crm_out, lambda rs: len(envelopes(rs, "crm.task.upserted")) >= 2)
        pm_records = await kafka_probe.collect(pm_out, lambda rs: len(envelopes(rs, "pm.task.upserted")) >= 2)
    assert changed["version"] == 2
    crm_tasks = envelopes(crm_records, "crm.task.upserted")
    assert [(e.payload.version, e.payload.status) for e in crm_tasks] == [(1, "open"), (2, "closed")]
    assert all(e.envelope.origin == "crm" and e.payload.command_id is None and e.payload.acting_user_id == "u-1" for e in crm_tasks)
    assert crm_tasks[0].envelope.entity_key == f"task:{task['id']}" and crm_tasks[0].payload.add_to_pm
    pm_tasks = envelopes(pm_records, "pm.task.upserted")
    assert [(e.payload.version, e.payload.status, e.envelope.origin) for e in pm_tasks] == [(1, "open", "pm"), (2, "closed", "pm")]


async def test_http_api_answers_over_real_http(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    settings = hub_env.settings(SandboxSettings, "sandbox")
    server = uvicorn.Server(uvicorn.Config(build(settings).asgi(), host="127.0.0.1", port=settings.http_port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server stopped"
            await asyncio.sleep(0.05)
        async with SandboxHttpClient(f"http://127.0.0.1:{settings.http_port}", org_id=ORG, acting_user_id="u-1") as http:
            out = await kafka_probe.reader(topics.PM_INGEST, topics.HUB_REQUESTS)
            await http.pm.upsert_portal(PORTAL, name="Portal", plan="free")
            company = await http.pm.upsert_client_company(portal_id=PORTAL, name="Acme")
            await http.pm.upsert_client_user(client_company_id=company["id"], email="a@acme.example", name="A")
            with pytest.raises(Rejected) as refused:
                await http.pm.upsert_client_user(client_company_id=company["id"], email="A@acme.example", name="B")
            users = await http.pm.list("client_user")
            portal = await http.pm.get("portal", PORTAL)
            missing = await http.pm.get("task", "nope")
            sent = await http.request("hub.integration.enable", portal_id=PORTAL, field_mapping=[],
                                      permissions={"role": "employee", "permissions": ["add_task"]}, deal_won_creates_project=False)
            records = await kafka_probe.collect(out, lambda rs: bool(envelopes(rs, "hub.integration.enable")))
            counters = await http.counters()
            health = await http.http.get(f"http://127.0.0.1:{settings.http_port}/readyz")
    finally:
        server.should_exit = True
        await serving
    assert refused.value.code == "duplicate_email"
    assert [u["name"] for u in users] == ["A"]
    assert portal is not None and portal["plan"] == "free" and portal["version"] == 1
    assert missing is None
    request = envelopes(records, "hub.integration.enable")[0]
    assert str(request.payload.request_id) == sent["request_id"] and request.payload.acting_user_id == "u-1"
    assert request.envelope.entity_key == f"org:{ORG}" and request.envelope.origin == "crm"
    assert counters["event_emitted"]["hub.integration.enable"] == 1
    assert health.status_code == 200


async def test_locked_task_refuses_the_integrations_update_until_unlocked(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        task = await sb.pm.upsert_task(project_id="proj-1", title="T")
        locked = await sb.pm.lock_task(task["id"])
        assert locked["extra"]["locked"] is True and locked["version"] == task["version"], "a lock is no change"
        await sb.pm.update_task(task["id"], priority="low")  # a person can still change it
        out = await kafka_probe.reader(topics.PM_INGEST)

        def update(title: str) -> cmd.PmTaskUpdate:
            return cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id="proj-1",
                                    task_id=task["id"], base_version=2, changes=[{"field": "title", "value": title}])

        refused = update("Refused")
        await kafka_probe.send(command(refused, f"task:{task['id']}"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, refused.command_id)))
        await sb.pm.lock_task(task["id"], locked=False)
        applied = update("Applied")
        await kafka_probe.send(command(applied, f"task:{task['id']}"))
        records += await kafka_probe.collect(out, lambda rs: bool(with_command(rs, applied.command_id)))
        after = await sb.pm.get("task", task["id"])
    rejection = with_command(records, refused.command_id)[0]
    assert rejection.event_type == "pm.command.rejected" and rejection.payload.reason_code == "locked"
    assert with_command(records, applied.command_id)[0].event_type == "pm.task.upserted"
    assert after is not None and after["title"] == "Applied"


async def test_command_for_an_org_the_sandbox_does_not_host_is_ignored_and_counted(hub_env: HubEnv,
                                                                                   kafka_probe: KafkaProbe) -> None:
    async with sandbox(hub_env) as (_, sb):
        await pm_world(sb)
        out = await kafka_probe.reader(topics.PM_INGEST)
        elsewhere = cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL,
                                     project_id="proj-1", task_id="pm-task-1", base_version=1,
                                     changes=[{"field": "title", "value": "Applied by another connector"}])
        here = task_create()
        # same key, same partition: once `here` is answered, the other org's command has been handled before it
        await kafka_probe.send(make_event(elsewhere, org_id="org-elsewhere", entity_key="task:k", producer="tasks",
                                          origin="hub"))
        await kafka_probe.send(command(here, "task:k"))
        records = await kafka_probe.collect(out, lambda rs: bool(with_command(rs, here.command_id)))
        other = await sb.for_org("org-elsewhere").counters()
        hosted = await sb.counters()
    ignored = other["totals"]["command_ignored"]
    assert ignored == 1
    assert other["totals"]["command_rejected"] == other["totals"]["event_emitted"] == 0, "no answer for an org not hosted"
    assert not with_command(records, elsewhere.command_id)
    assert with_command(records, here.command_id)[0].event_type == "pm.task.upserted"
    assert hosted["totals"]["command_ignored"] == 0 and hosted["totals"]["command_applied"] == 1
