"""The PM connector against the fake Zoho Projects over HTTP, through the real broker and database."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import httpx
import pytest
from pm_harness import ORG, PORTAL, WEBHOOK_SECRET, pm_connector, seed

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes
from hub_platform.http import app_of
from hub_schema import make_event, topics
from hub_schema.events import commands as cmd
from hub_schema.events.commands import StatusChange

pytestmark = pytest.mark.integration


def command(payload: Any, key: str) -> Any:
    return make_event(payload, org_id=ORG, entity_key=key, producer="tasks", origin="hub", event_id=uuid.uuid4())


def types(records: list[Any]) -> list[str]:
    """One per event id (the connector's own background poll may publish the same events once more)."""
    return sorted({e.event_id: e.event_type for e in envelopes(records)}.values())


async def test_poll_publishes_every_kind_once_per_state(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with pm_connector(hub_env) as pm:
        world = seed(pm.fake)
        out = await kafka_probe.reader(topics.PM_INGEST)
        assert await pm.connector.poll(ORG) == 6
        # six distinct events: the background poll's copies of the same events do not count
        records = await kafka_probe.collect(out, lambda rs: len(types(rs)) >= 6)
        assert types(records) == sorted(["pm.portal.upserted", "pm.portal_user.upserted", "pm.client_company.upserted",
                                         "pm.project.upserted", "pm.task.upserted", "pm.comment.added"])
        by_type = {e.event_type: e for e in envelopes(records)}
        task = by_type["pm.task.upserted"]
        assert (task.payload.id, task.payload.project_id, task.payload.priority, task.payload.add_to_crm, task.payload.due_date) == \
            (world["task"]["id"], world["project"]["id"], "high", True, date(2026, 12, 1))
        assert by_type["pm.portal.upserted"].payload.plan == "paid"
        assert by_type["pm.project.upserted"].payload.client_company_ids == [world["client"]["id"]]
        assert by_type["pm.comment.added"].payload.author_name == "Ada"
        # nothing changed: the overlap re-reads records, but their state is the same event (no new version)
        await pm.connector.poll(ORG)
        pm.fake.ui_pm("tasks", {**world["task"], "status": {"name": "Closed", "is_closed_type": True}})
        await pm.connector.poll(ORG)
        records = await kafka_probe.collect(out, lambda rs: any(e.event_type == "pm.task.upserted" and e.payload.status == "closed"
                                                                for e in envelopes(rs)), settle=1.0)
        new_tasks = {e.event_id: e for e in envelopes(records) if e.event_type == "pm.task.upserted" and e.event_id != task.event_id}
        assert [(t.payload.status, t.payload.version) for t in new_tasks.values()] == [("closed", 2)]


async def test_retried_task_command_creates_once_and_refusals_carry_the_command_id(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    async with pm_connector(hub_env) as pm:
        world = seed(pm.fake)
        out = await kafka_probe.reader(topics.PM_INGEST)
        create = cmd.PmTaskCreate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id=world["project"]["id"],
                                  title="Send contract", priority="medium", status="open", due_date=date(2027, 2, 1))
        missing = cmd.PmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), portal_id=PORTAL, project_id=world["project"]["id"],
                                   task_id="404", base_version=1, changes=[StatusChange(field="status", value="closed")])
        # one key, one partition: the refusal of the last comes after both copies of the create were handled
        for c in (create, create, missing):
            await kafka_probe.send(command(c, "task:hub-1"))

        def echoes_of(rs: list[Any]) -> list[Any]:
            return [e for e in envelopes(rs, "pm.task.upserted") if e.payload.command_id is not None]

        records = await kafka_probe.collect(out, lambda rs: echoes_of(rs) and envelopes(rs, "pm.command.rejected"))
        echoes = echoes_of(records)
        assert {e.payload.command_id for e in echoes} == {create.command_id} and len({e.event_id for e in echoes}) == 1
        assert [t["name"] for t in pm.fake.pm["tasks"].values()].count("Send contract") == 1
        refusals = {e.payload.command_id: e.payload.reason_code for e in envelopes(records, "pm.command.rejected")}
        assert refusals == {missing.command_id: "not_found"}


@pytest.mark.attack("calls the Projects workflow webhook without the org's shared secret",
                    outcome="refused with 403 and logged; no poll is triggered")
async def test_webhook_needs_the_shared_secret(hub_env: HubEnv) -> None:
    async with pm_connector(hub_env) as pm:
        app = app_of(pm.connector.api().routes)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://connector") as http:
            hook = f"/zoho/projects/webhook/{ORG}"
            assert (await http.post(hook, headers={"X-Hub-Webhook-Secret": "guess"})).status_code == 403
            assert (await http.post(hook)).status_code == 403
            assert (await http.post("/zoho/projects/webhook/other-org", headers={"X-Hub-Webhook-Secret": WEBHOOK_SECRET})).status_code == 403
            assert not pm.connector.poll_now.is_set()
            assert (await http.post(hook, headers={"X-Hub-Webhook-Secret": WEBHOOK_SECRET})).status_code == 202
            assert pm.connector.poll_now.is_set()
