"""A CRM connector on the real broker and database, talking to a fake Zoho over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from hub_crm_connector.ingress import Connector
from hub_crm_connector.main import build
from hub_crm_connector.settings import CrmConnectorSettings
from hub_devstack.provision import provision_service
from hub_devstack.pytest_plugin import HubEnv, free_port, running
from hub_fakezoho.app import FakeZoho, serving
from hub_schema import Payload, make_event
from hub_zoho.orgs import ZohoOrg

ORG = "org-1"
NOTIFY_TOKEN = "n0tify-t0ken-of-the-org"


@dataclass
class Crm:
    fake: FakeZoho
    connector: Connector
    service: Any
    url: str
    zoho_url: str


def zoho_org(fake: FakeZoho, url: str, **over: Any) -> ZohoOrg:
    return ZohoOrg.model_validate({"org_id": ORG, "client_id": fake.client_id, "client_secret": fake.client_secret,
                                   "refresh_token": fake.refresh_token, "accounts_url": url, "api_url": url, "projects_url": url,
                                   "notify_token": NOTIFY_TOKEN, **over})


@contextlib.asynccontextmanager
async def serve(app: Starlette, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def crm_connector(env: HubEnv, fake: FakeZoho | None = None, **settings: str) -> AsyncIterator[Crm]:
    env.dsns["crm-connector"] = await provision_service(env.admin_dsn, env.database, "crm_connector", "crm_connector")
    fake = fake or FakeZoho()
    port = free_port()
    async with serving(fake) as zoho_url:
        s = env.settings(CrmConnectorSettings, "crm-connector", HUB_CRM_CONNECTOR_PUBLIC_URL=f"http://127.0.0.1:{port}",
                         HUB_CRM_CONNECTOR_POLL_SECONDS="3600", **settings)
        connector = Connector(s, orgs={ORG: zoho_org(fake, zoho_url)})
        service = build(s, connector)
        async with running(service), serve(service.http_app(), port):
            try:
                yield Crm(fake, connector, service, f"http://127.0.0.1:{port}", zoho_url)
            finally:
                await connector.aclose()


def command(payload: Payload, key: str) -> Any:
    return make_event(payload, org_id=ORG, entity_key=key, producer="tasks", origin="hub", event_id=uuid.uuid4())
