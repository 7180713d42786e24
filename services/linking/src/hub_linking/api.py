"""The read API behind the CRM's Projects tab (S2), authenticated by the org's service key (S24).

Why shaped like this:
- the service key names the org: a reader never passes an org id, so one org cannot ask for
  another's data; keys are looked up by their SHA-256 and compared in constant time;
- a disabled integration returns no links (S7): the filter is in every query (api_queries);
- the key is minted by POST /api/v1/orgs/{org_id}/service-key (admin bootstrap token) and
  returned once in that response; the outbox carries only "rotated" with the key id. The same
  rotation can come over hub.requests (hub.service_key.generate, key hash only).
- the OpenAPI document (/api/v1/openapi.json) is generated from these declarations.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from hub_linking import api_queries, domain, storage
from hub_platform.emit import correlation_id_of, emitting
from hub_platform.http import Body, Caller, HubApi, Input, Path, ServiceKeyAuth, TokenAuth
from hub_platform.logs import get_logger
from hub_platform.service_keys import org_of_key
from hub_schema.events.linking import ServiceKeyRotated

if TYPE_CHECKING:
    from hub_platform.service import HubService

log = get_logger(__name__)

RecordType = Literal["account", "contact", "deal", "lead"]
Id = Annotated[str, Path(min_length=1, max_length=100)]  # as hub_schema's RecordId
OrgId = Annotated[str, Path(min_length=1, max_length=80)]  # as hub_schema's OrgId


class MintRequest(Input):
    """Optional body of a key mint: who asks, for the log (the token says only "an admin")."""

    requested_by: str = Field("admin-token", min_length=1, max_length=100)


class LinkedProject(BaseModel):
    project_id: str
    portal_id: str
    name: str
    status: Literal["active", "completed", "on_hold", "archived"]
    progress_percent: int = Field(ge=0, le=100)
    owner_id: str | None
    group_id: str | None
    linked_at: datetime


class RecordRef(BaseModel):
    record_type: RecordType
    record_id: str


class RecordProjects(BaseModel):
    record: RecordRef
    projects: list[LinkedProject]


class LinkedRecord(BaseModel):
    record_type: RecordType
    record_id: str
    name: str | None
    portal_id: str
    linked_at: datetime


class ProjectRecords(BaseModel):
    project_id: str
    records: list[LinkedRecord]


class MintedKey(BaseModel):
    org_id: str
    key_id: uuid.UUID
    service_key: str = Field(description="the new key, shown once")


def build_api(service: HubService) -> HubApi:
    """The routes, bound to the running service (its pool; the relay is woken by `emitting`)."""
    api = HubApi()
    org_key = ServiceKeyAuth(lambda: service.pool, org_of_key)
    admin = TokenAuth(lambda: service.settings.admin_token, "admin", "HUB_LINKING_ADMIN_TOKEN")  # type: ignore[attr-defined]

    @api.get("/api/v1/records/{record_type}/{record_id}/projects", auth=org_key,
             summary="Projects linked to an account, contact, deal or lead, with status and progress (S2)")
    async def record_projects(caller: Caller, record_type: RecordType, record_id: Id) -> RecordProjects:
        assert caller.org_id is not None
        async with service.pool.acquire() as conn:  # type: ignore[union-attr]
            rows = await api_queries.projects_of_record(conn, caller.org_id, record_type, record_id)
        return RecordProjects(record=RecordRef(record_type=record_type, record_id=record_id),
                              projects=[LinkedProject(**r) for r in rows])

    @api.get("/api/v1/projects/{project_id}/records", auth=org_key, summary="CRM records linked to a project")
    async def project_records(caller: Caller, project_id: Id) -> ProjectRecords:
        assert caller.org_id is not None
        async with service.pool.acquire() as conn:  # type: ignore[union-attr]
            rows = await api_queries.records_of_project(conn, caller.org_id, project_id)
        return ProjectRecords(project_id=project_id, records=[LinkedRecord(**r) for r in rows])

    @api.post("/api/v1/orgs/{org_id}/service-key", auth=admin, status_code=201,
              summary="Generate or regenerate the org's service key (S24); the old key stops working at once")
    async def rotate_key(request: Request, org_id: OrgId,
                         body: Annotated[MintRequest, Body(default_factory=MintRequest)]) -> MintedKey:
        key = domain.new_service_key()
        key_id = uuid.uuid4()
        sha = domain.key_sha256(key)
        at = datetime.now(timezone.utc)
        async with emitting(service, correlation_id=correlation_id_of(request.headers)) as out:
            await storage.store_service_key(out.conn, org_id, key_id, sha, body.requested_by)
            await out.emit(ServiceKeyRotated(key_id=key_id, key_sha256=sha, rotated_by=body.requested_by, rotated_at=at),
                           org_id=org_id, entity_key=f"{org_id}:service_key")
        # The audit trail of every key minted: org, who, when, from where; never the key nor its hash.
        log.info("service key minted", org_id=org_id, key_id=str(key_id), minted_by=body.requested_by,
                 credential="admin token", client=request.client.host if request.client else None,
                 minted_at=at.isoformat())
        return JSONResponse({"org_id": org_id, "key_id": str(key_id), "service_key": key}, status_code=201,  # type: ignore[return-value]
                            headers={"Cache-Control": "no-store"})

    return api
