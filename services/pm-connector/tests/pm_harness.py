"""A PM connector on the real broker and database, polling a fake Zoho Projects over real HTTP."""

from __future__ import annotations

import asyncio

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn  # noqa: F401  (the fake serves with it)

from hub_devstack.provision import provision_service
from hub_devstack.pytest_plugin import HubEnv, running
from hub_fakezoho.app import FakeZoho, serving
from hub_pm_connector.ingress import Connector
from hub_pm_connector.main import build
from hub_pm_connector.settings import PmConnectorSettings
from hub_zoho.orgs import ZohoOrg

ORG = "org-1"
PORTAL = "700001"
WEBHOOK_SECRET = "webhook-secret-of-the-org"


@dataclass
class Pm:
    fake: FakeZoho
    connector: Connector
    service: Any


def seed(fake: FakeZoho) -> dict[str, Any]:
    """A paid portal with an admin, a client company, a project and a task with a comment."""
    fake.portals[PORTAL] = {"id": PORTAL, "name": "Acme portal", "plan": "Enterprise"}
    admin = fake.ui_pm("users", {"id": "pu-1", "portal_id": PORTAL, "email": "ada@example.com", "name": "Ada",
                                 "role": {"name": "Administrator"}})
    client = fake.ui_pm("clients", {"portal_id": PORTAL, "name": "Acme Corp"})
    project = fake.ui_pm("projects", {"portal_id": PORTAL, "name": "Rollout", "owner": {"zpuid": admin["id"]}, "status": "active",
                                      "percent_complete": 20, "users": [{"zpuid": admin["id"]}],
                                      "client_companies": [{"id": client["id"]}]})
    task = fake.ui_pm("tasks", {"portal_id": PORTAL, "project_id": project["id"], "name": "Kick-off", "priority": "High",
                                "status": {"name": "Open", "is_closed_type": False}, "add_to_crm": True,
                                "end_date": "2026-12-01"})
    comment = fake.ui_pm("comments", {"portal_id": PORTAL, "project_id": project["id"], "task_id": task["id"],
                                      "comment": "Agenda sent", "created_by": {"zpuid": admin["id"], "name": "Ada"}})
    return {"admin": admin, "client": client, "project": project, "task": task, "comment": comment}


@contextlib.asynccontextmanager
async def pm_connector(env: HubEnv, fake: FakeZoho | None = None, **settings: str) -> AsyncIterator[Pm]:
    env.dsns["pm-connector"] = await provision_service(env.admin_dsn, env.database, "pm_connector", "pm_connector")
    fake = fake or FakeZoho()
    async with serving(fake) as url:
        s = env.settings(PmConnectorSettings, "pm-connector", HUB_PM_CONNECTOR_POLL_SECONDS="3600", **settings)
        org = ZohoOrg.model_validate({"org_id": ORG, "client_id": fake.client_id, "client_secret": fake.client_secret,
                                      "refresh_token": fake.refresh_token, "accounts_url": url, "api_url": url, "projects_url": url,
                                      "portal_ids": [PORTAL], "webhook_secret": WEBHOOK_SECRET})
        connector = Connector(s, orgs={ORG: org})
        service = build(s, connector)
        async with running(service):
            # the poll loop's first round (a poll and a sweep) runs at start: a test that calls poll or sweep itself
            # does so after it, or the two could both see a deletion and the test find it already published
            deadline = asyncio.get_running_loop().time() + 60
            while connector.rounds == 0:
                assert asyncio.get_running_loop().time() < deadline, "the connector's first poll round never ended"
                await asyncio.sleep(0.02)
            try:
                yield Pm(fake, connector, service)
            finally:
                await connector.aclose()
