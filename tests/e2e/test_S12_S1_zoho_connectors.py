"""S12, S13 and S1 through the Zoho connectors: a task saved in (fake) Zoho CRM with "add to the PM tool" becomes a
task in (fake) Zoho Projects, and a change made there comes back to the CRM task.

The whole path is real except Zoho: the fake Zoho's CRM notifies the CRM connector over HTTP, which reads
the task and publishes it; the four services decide; the PM connector creates the task through the
Projects API and publishes its echo; the PM poll picks up the change in Projects; the CRM connector
writes it to the CRM task. No sandbox runs (the connectors stand where it stands).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from hub_crm_connector.ingress import Connector as CrmConnector
from hub_crm_connector.main import build as build_crm
from hub_crm_connector.settings import CrmConnectorSettings
from hub_devstack.e2e import HubStack, hub_stack
from hub_devstack.provision import provision_service
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, free_port, running
from hub_fakezoho.app import FakeZoho, serving
from hub_platform.http import app_of
from hub_pm_connector.ingress import Connector as PmConnector
from hub_pm_connector.main import build as build_pm
from hub_pm_connector.settings import PmConnectorSettings
from hub_schema import make_event
from hub_schema.registry import lookup
from hub_zoho.orgs import ZohoOrg

pytestmark = pytest.mark.e2e

ORG, PORTAL = "org-1", "700001"
SETTLE = 120.0
WITH_ADD_TASK = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


@contextlib.asynccontextmanager
async def connectors(env: HubEnv, stack: HubStack, fake: FakeZoho, zoho_url: str) -> AsyncIterator[tuple[CrmConnector, PmConnector]]:
    org = {"org_id": ORG, "client_id": fake.client_id, "client_secret": fake.client_secret, "refresh_token": fake.refresh_token,
           "accounts_url": zoho_url, "api_url": zoho_url, "projects_url": zoho_url, "portal_ids": [PORTAL],
           "notify_token": "e2e-notify-token"}
    for name in ("crm-connector", "pm-connector"):  # the principal; its schema and role have an underscore
        schema = name.replace("-", "_")
        env.dsns[name] = await provision_service(env.admin_dsn, env.database, schema, schema)
    port = free_port()
    crm_settings = env.settings(CrmConnectorSettings, "crm-connector", HUB_CRM_CONNECTOR_PUBLIC_URL=f"http://127.0.0.1:{port}",
                                HUB_CRM_CONNECTOR_POLL_SECONDS="3600", HUB_OBS__LOG_LEVEL="warning")
    pm_settings = env.settings(PmConnectorSettings, "pm-connector", HUB_PM_CONNECTOR_POLL_SECONDS="3600",
                               HUB_OBS__LOG_LEVEL="warning")
    crm = CrmConnector(crm_settings, orgs={ORG: ZohoOrg.model_validate(org)})
    pm = PmConnector(pm_settings, orgs={ORG: ZohoOrg.model_validate(org)})
    crm_service, pm_service = build_crm(crm_settings, crm), build_pm(pm_settings, pm)
    server = uvicorn.Server(uvicorn.Config(app_of(crm.api().routes), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    async with running(crm_service), running(pm_service):
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        stack.services.update({"crm-connector": crm_service, "pm-connector": pm_service})  # quiesce() waits for them too
        try:
            yield crm, pm
        finally:
            server.should_exit = True
            await task
            await crm.aclose()
            await pm.aclose()


def say(text: str) -> None:
    """The story's steps, shown by `make demo ZOHO=fake` (pytest -s)."""
    print(f"  {text}", flush=True)


async def request(probe: KafkaProbe, request_type: str, **fields: Any) -> None:
    """What the integration's UI in the CRM sends (hub.requests)."""
    model = lookup(request_type, None)
    assert model is not None
    payload = model.model_validate_json(json.dumps({"request_id": str(uuid.uuid4()), **fields}))
    await probe.send(make_event(payload, org_id=ORG, entity_key=f"org:{ORG}", producer="crm-ui", origin="crm"))


async def test_S12_S1_crm_task_to_projects_and_back_through_the_zoho_connectors(
        hub_env: HubEnv, kafka_probe: KafkaProbe, tmp_path: Path) -> None:
    fake = FakeZoho()
    admin = fake.ui_crm_user({"email": "ada@example.com", "full_name": "Ada Admin", "profile": {"name": "Administrator"}})
    fake.limits.drop_notifications = 10_000  # the existing records: nobody was watching yet
    acme = fake.ui_crm("Accounts", {"Account_Name": "Acme"})
    fake.limits.drop_notifications = 0
    fake.portals[PORTAL] = {"id": PORTAL, "name": "Acme portal", "plan": "Enterprise"}
    fake.ui_pm("users", {"id": "pu-ada", "portal_id": PORTAL, "email": "ada@example.com", "name": "Ada",
                         "role": {"name": "Administrator"}})
    project = fake.ui_pm("projects", {"portal_id": PORTAL, "name": "Acme rollout", "owner": {"zpuid": "pu-ada"},
                                      "status": "active", "users": [{"zpuid": "pu-ada"}]})
    async with serving(fake) as zoho_url, hub_stack(hub_env, tmp_path, ("identity", "linking", "tasks", "notifications")) as stack, \
            connectors(hub_env, stack, fake, zoho_url) as (crm, pm):
        say(f"fake Zoho at {zoho_url}; CRM connector notified at {crm.notify_url(ORG)}")
        await crm.backfill(ORG, None)  # the org, its admin and Acme (hub-connector backfill)
        await pm.poll(ORG)  # the portal, its user and the project
        await stack.quiesce(SETTLE)
        say(f"1. backfill: CRM org, admin {admin['email']}, account Acme {acme['id']}; Projects portal {PORTAL}, project {project['id']}")
        await request(kafka_probe, "hub.integration.enable", acting_user_id=admin["id"], portal_id=PORTAL, field_mapping=[],
                      permissions=WITH_ADD_TASK, deal_won_creates_project=False)
        await stack.quiesce(SETTLE)
        await request(kafka_probe, "hub.project.associate", acting_user_id=admin["id"], record_type="account",
                      record_id=acme["id"], project_id=project["id"])
        await stack.quiesce(SETTLE)
        say(f"2. integration enabled with portal {PORTAL}; project 'Acme rollout' associated with Acme")
        # S13: the account got its client company in Zoho Projects through the PM connector, once
        clients = [c for c in fake.pm["clients"].values() if c["name"] == "Acme"]
        assert len(clients) == 1, f"expected Acme as one client company in Zoho Projects, got {list(fake.pm['clients'].values())}"
        say(f"   S13: Acme -> Zoho Projects client company {clients[0]['id']}")

        # S12: Ada saves a task on Acme in Zoho CRM with "add to the PM tool"; Zoho notifies the connector
        crm_task = fake.ui_crm("Tasks", {"Subject": "Site survey", "What_Id": {"id": acme["id"]}, "$se_module": "Accounts",
                                         "Priority": "High", "Due_Date": "2026-12-05", "Owner": {"id": admin["id"]},
                                         "Created_By": {"id": admin["id"]}, "Modified_By": {"id": admin["id"]},
                                         "Hub_Add_To_PM": True})
        await stack.quiesce(SETTLE)
        pm_tasks = [t for t in fake.pm["tasks"].values() if t["name"] == "Site survey"]
        assert len(pm_tasks) == 1, f"expected one task in Zoho Projects, got {list(fake.pm['tasks'].values())}"
        pm_task = pm_tasks[0]
        say(f"3. CRM task {crm_task['id']} 'Site survey' (add to PM) -> Zoho Projects task {pm_task['id']} in {project['id']}")
        assert (pm_task["project_id"], pm_task["priority"], pm_task["end_date"]) == (project["id"], "High", "2026-12-05")

        # S1: someone closes it in Zoho Projects; the PM poll sees it and the CRM task follows
        fake.ui_pm("tasks", {**pm_task, "status": {"name": "Closed", "is_closed_type": True}})
        await pm.poll(ORG)
        await stack.quiesce(SETTLE)
        assert fake.crm["Tasks"][crm_task["id"]]["Status"] == "Completed"
        say(f"4. closed in Zoho Projects -> CRM task {crm_task['id']} status {fake.crm['Tasks'][crm_task['id']]['Status']}")
        say(f"   Zoho calls: {len(fake.calls)}, throttled {fake.throttled}, access tokens issued {len(fake.issued)}")
        assert len(fake.crm["Tasks"]) == 1 and len(fake.pm["tasks"]) == 1, "nothing mirrored back and forth twice"
