"""The linking service under test (its own tests and some end-to-end tests): `hub_devstack.harness`'s
ServiceHarness with the vocabulary of linking's stories (users, portals, projects, accounts, deals,
enable requests) and its HTTP API (service keys, the projects tab).

The `linking` fixture runs the real service in the test's event loop and serves its HTTP API.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hub_devstack.harness import ServiceHarness, service_harness
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe
from hub_schema import topics
from hub_schema.events import crm, identity, pm, requests
from hub_schema.events.common import PermissionProfile
from hub_schema.registry import Payload

T0 = datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc)
ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(32)
ORG = "org-1"
ALL_PERMS = PermissionProfile(role="manager", permissions=["add_task", "edit_project", "associate_project", "add_users"])
NO_PERMS = PermissionProfile(role="employee", permissions=["add_task"])


class Harness(ServiceHarness):
    """The linking service under test, with the upstreams' and identity's events it reacts to."""

    async def send(self, payload: Payload, *, org: str = ORG, key: str | None = None,  # type: ignore[override]
                   origin: str = "crm") -> Any:
        return await super().send(payload, org=org, key=key or f"{payload.EVENT_TYPE}:{uuid.uuid4().hex[:6]}",
                                  origin=origin)

    async def request(self, payload: Payload, *, org: str = ORG) -> Any:
        return await self.send(payload, org=org, key=f"org:{org}")

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
    async with service_harness(hub_env, kafka_probe, "linking", cls=Harness, serve_http=True,
                               outputs=(topics.LINKING_EVENTS, topics.PM_COMMANDS, topics.NOTIFICATION_REQUESTS),
                               HUB_LINKING_ADMIN_TOKEN=ADMIN_TOKEN) as harness:
        yield harness
