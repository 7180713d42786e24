"""Test harness (used by this service's tests and end-to-end tests): a running linking service on the real broker and DB.

`linking` starts the service in the test's event loop, serves its Starlette app with
uvicorn on a free port, and gives helpers to publish upstream events / requests, wait
until the service handled them (its inbox), and read what it published.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes, running
from hub_linking.main import build
from hub_linking.settings import LinkingSettings
from hub_schema import make_event, topics
from hub_schema.events import crm, identity, pm, requests
from hub_schema.events.common import PermissionProfile
from hub_schema.registry import Payload

T0 = datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc)
ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(32)
ORG = "org-1"
ALL_PERMS = PermissionProfile(role="manager", permissions=["add_task", "edit_project", "associate_project", "add_users"])
NO_PERMS = PermissionProfile(role="employee", permissions=["add_task"])


class Harness:
    def __init__(self, env: HubEnv, probe: KafkaProbe, service: Any, http: httpx.AsyncClient, reader: Any) -> None:
        self.env = env
        self.probe = probe
        self.service = service
        self.http = http
        self.reader = reader
        self.sent = 0
        self.records: list[Any] = []

    # --- publishing -----------------------------------------------------------------------------

    async def send(self, payload: Payload, *, org: str = ORG, key: str | None = None, origin: str = "crm") -> Any:
        env = make_event(payload, org_id=org, entity_key=key or f"{payload.EVENT_TYPE}:{uuid.uuid4().hex[:6]}",
                         producer="test", origin=origin)  # type: ignore[arg-type]
        await self.probe.send(env)
        self.sent += 1
        return env

    async def request(self, payload: Payload, *, org: str = ORG) -> Any:
        return await self.send(payload, org=org, key=f"org:{org}")

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until the service handled every event sent so far (its inbox has a row per event)."""
        conn = await self.db()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                n = await conn.fetchval("SELECT count(*) FROM inbox")
                if n >= self.sent:
                    return
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"service handled {n} of {self.sent} events")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.env.dsns["linking"])

    # --- reading what the service published --------------------------------------------------------

    async def wait_for(self, pred: Callable[[list[Any]], bool], timeout: float = 30.0, settle: float = 0.0) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until: float | None = None
        while True:
            evs = envelopes(self.records)
            if settle_until is None and pred(evs):
                if settle <= 0:
                    return evs
                settle_until = loop.time() + settle
            if settle_until is not None and loop.time() >= settle_until:
                return envelopes(self.records)
            if loop.time() > deadline:
                raise AssertionError(f"timed out; saw {[e.event_type for e in evs]}")
            batch = await self.reader.getmany(timeout_ms=200)
            for recs in batch.values():
                self.records.extend(recs)

    async def quiet(self, seconds: float = 1.5) -> list[Any]:
        """Everything published so far, after letting the relay drain."""
        await self.settled()
        return await self.wait_for(lambda evs: True, settle=seconds)

    def of(self, event_type: str, evs: list[Any] | None = None) -> list[Any]:
        return [e for e in (evs if evs is not None else envelopes(self.records)) if e.event_type == event_type]

    async def one(self, event_type: str, pred: Callable[[Any], bool] = lambda e: True, timeout: float = 30.0) -> Any:
        evs = await self.wait_for(lambda es: any(e.event_type == event_type and pred(e) for e in es), timeout=timeout)
        return next(e for e in evs if e.event_type == event_type and pred(e))

    # --- HTTP -----------------------------------------------------------------------------------

    async def new_key(self, org: str = ORG) -> str:
        r = await self.http.post(f"/api/v1/orgs/{org}/service-key", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 201, r.text
        return r.json()["service_key"]

    async def projects_of(self, key: str, record_type: str, record_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/v1/records/{record_type}/{record_id}/projects",
                                headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return r.json()["projects"]

    async def records_of(self, key: str, project_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/v1/projects/{project_id}/records", headers={"X-Hub-Service-Key": key})
        assert r.status_code == 200, r.text
        return r.json()["records"]

    # --- upstream fixtures ------------------------------------------------------------------------

    async def user(self, user_id: str, *, admin: bool = False, profile: PermissionProfile = ALL_PERMS,
                   portal_user_id: str | None = None, revision: int = 1, org: str = ORG, active: bool = True,
                   time_zone: str | None = None) -> None:
        await self.send(identity.UserAccessChanged(
            crm_user_id=user_id, email=f"{user_id}@example.com", name=f"User {user_id}", locale="en", active=active,
            time_zone=time_zone,
            is_admin=admin, portal_id="p-1", portal_user_id=portal_user_id, profile=profile, effective_from=T0,
            revision=revision), org=org, key=f"{org}:user:{user_id}", origin="hub")

    async def portal(self, portal_id: str, plan: str = "paid", *, org: str = ORG, version: int = 1) -> None:
        await self.send(pm.PmPortalUpserted(id=portal_id, name=f"portal {portal_id}", plan=plan, active=True,  # type: ignore[arg-type]
                                            modified_at=T0, version=version), org=org, key=f"portal:{portal_id}",
                        origin="pm")

    async def project(self, project_id: str, *, portal: str = "p-1", users: list[str] | None = None,
                      companies: list[str] | None = None, client_users: list[str] | None = None,
                      status: str = "active", progress: int = 0, version: int = 1, org: str = ORG,
                      command_id: uuid.UUID | None = None, custom_fields: dict[str, Any] | None = None) -> None:
        await self.send(pm.PmProjectUpserted(
            portal_id=portal, id=project_id, name=f"Project {project_id}", owner_id=(users or ["pu-owner"])[0],
            status=status, progress_percent=progress, schedule_fixed=False, user_ids=users or [],  # type: ignore[arg-type]
            client_company_ids=companies or [], client_user_ids=client_users or [], modified_at=T0 + timedelta(minutes=version),
            version=version, command_id=command_id, custom_fields=custom_fields or {}),
            org=org, key=f"project:{project_id}", origin="pm")

    async def company(self, company_id: str, name: str, *, portal: str = "p-1", org: str = ORG) -> None:
        await self.send(pm.PmClientCompanyUpserted(portal_id=portal, id=company_id, name=name, modified_at=T0, version=1),
                        org=org, key=f"client_company:{company_id}", origin="pm")

    async def client_user(self, cu_id: str, email: str, company_id: str, *, portal: str = "p-1",
                          command_id: uuid.UUID | None = None) -> None:
        await self.send(pm.PmClientUserUpserted(portal_id=portal, id=cu_id, email=email, name=f"CU {cu_id}",
                                                client_company_id=company_id, modified_at=T0, version=1,
                                                command_id=command_id),
                        key=f"client_user:{cu_id}", origin="pm")

    async def account(self, account_id: str, name: str, *, custom: dict[str, Any] | None = None, org: str = ORG,
                      version: int = 1) -> None:
        await self.send(crm.CrmAccountUpserted(id=account_id, name=name, custom_fields=custom or {}, modified_at=T0,
                                               version=version), org=org, key=f"account:{account_id}")

    async def contact(self, contact_id: str, account_id: str | None, email: str | None, *, last: str = "Sato") -> None:
        await self.send(crm.CrmContactUpserted(id=contact_id, account_id=account_id, last_name=last, email=email,
                                               modified_at=T0, version=1), key=f"contact:{contact_id}")

    async def lead(self, lead_id: str) -> None:
        await self.send(crm.CrmLeadUpserted(id=lead_id, last_name="Ito", modified_at=T0, version=1), key=f"lead:{lead_id}")

    async def deal(self, deal_id: str, account_id: str | None, *, won: bool = False, version: int = 1,
                   custom: dict[str, Any] | None = None, contact_ids: list[str] | None = None) -> None:
        from decimal import Decimal

        await self.send(crm.CrmDealUpserted(
            id=deal_id, name=f"Deal {deal_id}", account_id=account_id, contact_ids=contact_ids or [],
            stage="Closed Won" if won else "Negotiation", amount=Decimal("1200.50"), won=won,
            custom_fields=custom or {}, modified_at=T0 + timedelta(minutes=version), version=version),
            key=f"deal:{deal_id}")

    async def enable(self, by: str = "u-admin", portal: str = "p-1", *, mapping: list[dict[str, Any]] | None = None,
                     deal_won: bool = False, org: str = ORG) -> uuid.UUID:
        rid = uuid.uuid4()
        await self.request(requests.IntegrationEnable(
            request_id=rid, acting_user_id=by, portal_id=portal,
            field_mapping=[requests.FieldMapping(**m) for m in (mapping or [])], permissions=NO_PERMS,
            deal_won_creates_project=deal_won), org=org)
        return rid

    async def admin_with_portal(self) -> None:
        await self.user("u-admin", admin=True, portal_user_id="pu-admin", time_zone="America/New_York")
        await self.portal("p-1")


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
async def linking(hub_env: HubEnv, kafka_probe: KafkaProbe) -> AsyncIterator[Harness]:
    settings = hub_env.settings(LinkingSettings, "linking", HUB_LINKING_ADMIN_TOKEN=ADMIN_TOKEN)
    service = build(settings)
    async with running(service):
        reader = await kafka_probe.reader(topics.LINKING_EVENTS, topics.PM_COMMANDS, topics.NOTIFICATION_REQUESTS)
        config = uvicorn.Config(service.asgi(), host="127.0.0.1", port=settings.http_port, lifespan="off",
                                log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10) as http:
            yield Harness(hub_env, kafka_probe, service, http, reader)
        server.should_exit = True
        await task
