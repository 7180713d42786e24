"""The CRM connector against the fake Zoho over HTTP, through the real broker and database."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from crm_harness import NOTIFY_TOKEN, ORG, command, crm_connector

from hub_crm_connector import storage
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_schema import topics
from hub_schema.events import commands as cmd
from hub_schema.events.commands import TitleChange

pytestmark = pytest.mark.integration


def of_type(records: list[Any], event_type: str) -> list[Any]:
    return envelopes(records, event_type)


class Seen:
    """Everything a reader got so far (KafkaProbe.collect returns only what each call read)."""

    def __init__(self, probe: KafkaProbe, reader: Any) -> None:
        self.probe, self.reader, self.records = probe, reader, []  # type: ignore[var-annotated]

    async def until(self, pred: Any, **kw: Any) -> list[Any]:
        if not pred(self.records):
            self.records += await self.probe.collect(self.reader, lambda rs: pred(self.records + rs), **kw)
        return self.records


async def test_notification_publishes_the_changed_record_once_per_state(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env) as crm:
        seen = Seen(kafka_probe, await kafka_probe.reader(topics.CRM_INGEST))
        await crm.connector.renew_channels()
        account = crm.fake.ui_crm("Accounts", {"Account_Name": "Acme"})
        task = crm.fake.ui_crm("Tasks", {"Subject": "Call Acme", "What_Id": {"id": account["id"]}, "$se_module": "Accounts",
                                         "Priority": "High", "Created_By": {"id": "u-1"}, "Hub_Add_To_PM": True})
        records = await seen.until(lambda rs: len(of_type(rs, "crm.task.upserted")) == 1)
        ev = of_type(records, "crm.task.upserted")[0]
        assert ev.payload.id == task["id"] and ev.payload.record_type == "account" and ev.payload.record_id == account["id"]
        assert ev.payload.priority == "high" and ev.payload.add_to_pm and ev.payload.version == 1 and ev.payload.command_id is None
        assert ev.envelope.origin == "crm" and ev.envelope.entity_key == f"task:{task['id']}"
        # Zoho sends the same notification again: the same event (same id), nothing new
        await crm.fake.drain()
        again = next(n for n in crm.fake.notifications_sent if n["module"] == "Tasks")
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{crm.url}/zoho/crm/notify/{ORG}", json=again)).status_code == 200
        records = await seen.until(lambda rs: len(of_type(rs, "crm.task.upserted")) == 2)
        first, second = of_type(records, "crm.task.upserted")
        assert first.event_id == second.event_id
        # a real change is a new version and a new event
        crm.fake.ui_crm("Tasks", {"id": task["id"], "Status": "Completed"})
        records = await seen.until(lambda rs: len({e.event_id for e in of_type(rs, "crm.task.upserted")}) == 2)
        last = of_type(records, "crm.task.upserted")[-1]
        assert last.payload.status == "closed" and last.payload.version == 2


@pytest.mark.attack("POSTs a forged CRM change notification with a wrong channel token",
                    outcome="refused with 403, logged, nothing fetched from Zoho and nothing published")
async def test_notification_with_a_wrong_token_is_refused(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env) as crm:
        out = await kafka_probe.reader(topics.CRM_INGEST)
        crm.fake.limits.drop_notifications = 1  # only the notifications this test posts itself reach the connector
        account = crm.fake.ui_crm("Accounts", {"Account_Name": "Acme"})
        forged = {"server_time": 1, "module": "Accounts", "ids": [account["id"]], "operation": "update",
                  "channel_id": 1, "token": NOTIFY_TOKEN[:-1] + "X"}
        async with httpx.AsyncClient() as http:
            for body in (forged, {**forged, "token": None}, {**forged, "token": NOTIFY_TOKEN + "extra"}):
                resp = await http.post(f"{crm.url}/zoho/crm/notify/{ORG}", json=body)
                assert resp.status_code == 403
            assert not [c for c in crm.fake.calls if c[1] == "/crm/v7/Accounts"], "a forged notification must not make the connector read Zoho"
            ok = await http.post(f"{crm.url}/zoho/crm/notify/{ORG}", json={**forged, "token": NOTIFY_TOKEN})
            assert ok.status_code == 200
        records = await kafka_probe.collect(out, lambda rs: bool(envelopes(rs, "crm.account.upserted")), settle=1.0)
        assert len(envelopes(records, "crm.account.upserted")) == 1, "only the genuine notification publishes"


async def test_missed_notification_is_recovered_by_the_poll(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env) as crm:
        out = await kafka_probe.reader(topics.CRM_INGEST)
        await crm.connector.renew_channels()
        await crm.connector.poll(ORG)  # sets the cursors
        crm.fake.limits.drop_notifications = 1
        deal = crm.fake.ui_crm("Deals", {"Deal_Name": "Big deal", "Stage": "Closed Won"})
        await crm.fake.drain()
        assert crm.fake.notifications_dropped and not crm.fake.notifications_sent, "the notification must have been lost"
        await crm.connector.poll(ORG)
        records = await kafka_probe.collect(out, lambda rs: len(of_type(rs, "crm.deal.upserted")) == 1)
        ev = of_type(records, "crm.deal.upserted")[0]
        assert ev.payload.id == deal["id"] and ev.payload.won
        cursor = await storage.cursor(crm.connector.pool, ORG, "poll", "Deals")
        assert cursor["modified_since"] >= datetime.fromisoformat(deal["Modified_Time"]) - timedelta(milliseconds=1)


async def test_deletions_come_by_notification_and_a_lost_one_by_the_deleted_records_poll(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env) as crm:
        seen = Seen(kafka_probe, await kafka_probe.reader(topics.CRM_INGEST))
        await crm.connector.renew_channels()
        await crm.connector.poll(ORG)  # sets the cursors
        acme = crm.fake.ui_crm("Accounts", {"Account_Name": "Acme"})
        globex = crm.fake.ui_crm("Accounts", {"Account_Name": "Globex"})
        await seen.until(lambda rs: len(of_type(rs, "crm.account.upserted")) == 2)
        crm.fake.ui_crm_delete("Accounts", acme["id"])  # notified (operation: delete)
        records = await seen.until(lambda rs: len(of_type(rs, "crm.account.deleted")) == 1)
        first = of_type(records, "crm.account.deleted")[0]
        assert (first.payload.id, first.payload.version) == (acme["id"], 2)
        crm.fake.limits.drop_notifications = 1
        crm.fake.ui_crm_delete("Accounts", globex["id"])  # the notification is lost
        await crm.fake.drain()
        assert [n["ids"] for n in crm.fake.notifications_dropped] == [[globex["id"]]]
        await crm.connector.poll(ORG)  # reads Accounts/deleted: both deletions, the first one again
        records = await seen.until(lambda rs: {e.payload.id for e in of_type(rs, "crm.account.deleted")} == {acme["id"], globex["id"]})
        deleted = {e.event_id: e.payload.id for e in of_type(records, "crm.account.deleted")}
        assert sorted(deleted.values()) == sorted([acme["id"], globex["id"]]), "the first deletion again is the same event"
        assert any(c[1] == "/crm/v7/Accounts/deleted" for c in crm.fake.calls)


async def test_a_task_the_hub_created_is_its_echo_even_when_the_notification_comes_first(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """Zoho notifies as soon as the connector's insert went through, before the handler publishes the echo: the
    task's Hub_Command_Id makes that first sight the hub's own echo, not a person's task to mirror back."""
    async with crm_connector(hub_env) as crm:
        seen = Seen(kafka_probe, await kafka_probe.reader(topics.CRM_INGEST))
        await crm.connector.renew_channels()
        account = crm.fake.ui_crm("Accounts", {"Account_Name": "Acme"})
        command_id = uuid.uuid4()
        task = crm.fake.ui_crm("Tasks", {"Subject": "Mirrored", "What_Id": {"id": account["id"]}, "$se_module": "Accounts",
                                         "Created_By": {"id": "u-1"}, "Hub_Command_Id": str(command_id)})
        records = await seen.until(lambda rs: len(of_type(rs, "crm.task.upserted")) == 1)
        ev = of_type(records, "crm.task.upserted")[0]
        assert (ev.payload.id, ev.payload.command_id) == (task["id"], command_id)


async def test_channel_is_renewed_before_it_lapses(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env, HUB_CRM_CONNECTOR_CHANNEL_TTL_SECONDS="7200",
                             HUB_CRM_CONNECTOR_RENEW_BEFORE_SECONDS="600") as crm:
        await crm.connector.renew_channels()
        ch = await storage.channel(crm.connector.pool, ORG)
        first_expiry = crm.fake.channels[ch["channel_id"]].expires_at
        assert await crm.connector.renew_channels() == [], "far from expiry: left alone"
        # 11 minutes before expiry (inside the 10-minute margin? no: outside) and then 9 minutes before (inside)
        assert await crm.connector.renew_channels(now=first_expiry - timedelta(minutes=11)) == []
        assert await crm.connector.renew_channels(now=first_expiry - timedelta(minutes=9)) == [ORG]
        renewed = crm.fake.channels[ch["channel_id"]]
        assert renewed.expires_at > first_expiry
        assert renewed.notify_url == f"{crm.url}/zoho/crm/notify/{ORG}" and renewed.token == NOTIFY_TOKEN
        assert "Tasks.all" in renewed.events and len(crm.fake.channels) == 1, "renewed in place, not a second channel"


def task_create(record_id: str, **over: Any) -> cmd.CrmTaskCreate:
    fields = dict(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), record_type="account", record_id=record_id,
                  subject="Kick-off", priority="high", status="open", due_date=date(2026, 12, 1))
    return cmd.CrmTaskCreate(**{**fields, **over})


async def test_retried_command_creates_once_and_echoes_with_its_command_id(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env) as crm:
        seen = Seen(kafka_probe, await kafka_probe.reader(topics.CRM_INGEST))
        crm.fake.limits.drop_notifications = 1000  # the echoes only: no notification of the same changes racing them
        account = crm.fake.ui_crm("Accounts", {"Account_Name": "Acme"})
        create = task_create(account["id"])
        await kafka_probe.send(command(create, "task:hub-1"))
        await kafka_probe.send(command(create, "task:hub-1"))  # the same command in a new envelope (a producer retry)
        records = await seen.until(lambda rs: len(of_type(rs, "crm.task.upserted")) == 2)
        echoes = of_type(records, "crm.task.upserted")
        assert {e.payload.command_id for e in echoes} == {create.command_id}
        assert len({e.event_id for e in echoes}) == 1, "the replay publishes the same echo"
        assert [t["Subject"] for t in crm.fake.crm["Tasks"].values()] == ["Kick-off"]
        task_id = echoes[0].payload.id
        assert crm.fake.crm["Tasks"][task_id]["What_Id"] == {"id": account["id"]}
        # an update of it, then one of a task Zoho does not have: refused with the command id
        update = cmd.CrmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=create.hub_task_id, task_id=task_id, base_version=1,
                                   changes=[TitleChange(field="title", value="Kick-off (on site)")])
        missing = cmd.CrmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=create.hub_task_id, task_id="404", base_version=1,
                                    changes=[TitleChange(field="title", value="x")])
        await kafka_probe.send(command(update, "task:hub-1"))
        await kafka_probe.send(command(missing, "task:hub-1"))
        records = await seen.until(lambda rs: bool(of_type(rs, "crm.command.rejected"))
                                            and any(e.payload.command_id == update.command_id for e in of_type(rs, "crm.task.upserted")))
        changed = next(e for e in of_type(records, "crm.task.upserted") if e.payload.command_id == update.command_id)
        assert changed.payload.subject == "Kick-off (on site)" and changed.payload.version > echoes[0].payload.version
        rejected = of_type(records, "crm.command.rejected")[0]
        assert rejected.payload.command_id == missing.command_id and rejected.payload.reason_code == "not_found"


async def test_429_storm_backs_off_and_loses_no_command(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with crm_connector(hub_env) as crm:
        out = await kafka_probe.reader(topics.CRM_INGEST)
        crm.fake.limits.drop_notifications = 1000
        account = crm.fake.ui_crm("Accounts", {"Account_Name": "Acme"})
        crm.fake.limits.requests_per_window, crm.fake.limits.window_seconds, crm.fake.limits.retry_after = 2, 0.3, 0.1
        creates = [task_create(account["id"], subject=f"task {i}") for i in range(15)]
        for c in creates:
            await kafka_probe.send(command(c, f"task:hub-{c.hub_task_id}"))
        records = await kafka_probe.collect(out, lambda rs: {e.payload.command_id for e in of_type(rs, "crm.task.upserted")}
                                            >= {c.command_id for c in creates}, timeout=120)
        assert crm.fake.throttled > 0, "the storm must have happened"
        assert sorted(t["Subject"] for t in crm.fake.crm["Tasks"].values()) == sorted(c.subject for c in creates)
        assert not of_type(records, "crm.command.rejected")
