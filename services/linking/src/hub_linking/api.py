"""The read API behind the CRM's Projects tab (S2), authenticated by the org's service key (S24).

Why shaped like this:
- the service key names the org: a reader never passes an org id, so one org cannot ask for
  another's data; keys are looked up by their SHA-256 and compared in constant time;
- a disabled integration returns no links (S7): the filter is in every query (state = enabled
  and the link's portal is the current one), not in the callers;
- the key is minted by POST /api/v1/orgs/{org_id}/service-key (admin bootstrap token) and
  returned once in that response; the outbox carries only "rotated" with the key id. The same
  rotation can come over hub.requests (hub.service_key.generate, key hash only).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub_linking import domain, storage
from hub_platform.http import Caller, Input, ServiceKeyAuth, TokenAuth, endpoint
from hub_platform.logs import get_logger
from hub_platform.outbox import write_outbox
from hub_platform.service_keys import org_of_key
from hub_platform.telemetry import current_trace_headers
from hub_schema import encode, make_event
from hub_schema.events.linking import ServiceKeyRotated

log = get_logger(__name__)

RECORD_TYPES = ("account", "contact", "deal", "lead")
Id = Field(min_length=1, max_length=100)  # as hub_schema's RecordId


class RecordPath(Input):
    record_type: Literal["account", "contact", "deal", "lead"]
    record_id: str = Id


class ProjectPath(Input):
    project_id: str = Id


class OrgPath(Input):
    org_id: str = Field(min_length=1, max_length=80)  # as hub_schema's OrgId


class MintRequest(Input):
    """Optional body of a key mint: who asks, for the log (the token says only "an admin")."""

    requested_by: str = Field("admin-token", min_length=1, max_length=100)


class LinkingApi:
    """Routes bound to the running service (its pool, settings, relay)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        org_key = ServiceKeyAuth(lambda: self.service.pool, org_of_key)
        admin = TokenAuth(lambda: self.service.settings.admin_token, "admin", "HUB_LINKING_ADMIN_TOKEN")
        self.record_projects = endpoint(org_key, path=RecordPath)(self._record_projects)
        self.project_records = endpoint(org_key, path=ProjectPath)(self._project_records)
        self.rotate_key = endpoint(admin, path=OrgPath, body=MintRequest)(self._rotate_key)
        self.openapi = endpoint(None)(self._openapi)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/records/{record_type}/{record_id}/projects", self.record_projects, methods=["GET"]),
            Route("/api/v1/projects/{project_id}/records", self.project_records, methods=["GET"]),
            Route("/api/v1/orgs/{org_id}/service-key", self.rotate_key, methods=["POST"]),
            Route("/api/v1/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def _record_projects(self, request: Request, caller: Caller, *, path: RecordPath) -> Response:
        org, record_type, record_id = caller.org_id, path.record_type, path.record_id
        async with self.service.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT p.project_id, p.portal_id, p.name, p.status, p.progress_percent, p.owner_id, p.group_id,
                          l.changed_at
                   FROM links l
                   JOIN integrations i ON i.org_id = l.org_id AND i.state = 'enabled' AND i.portal_id = l.portal_id
                   JOIN projects p ON p.org_id = l.org_id AND p.portal_id = l.portal_id AND p.project_id = l.project_id
                        AND NOT p.deleted
                   WHERE l.org_id = $1 AND l.record_type = $2 AND l.record_id = $3 AND l.active
                   ORDER BY p.name, p.project_id""", org, record_type, record_id)
        return JSONResponse({
            "record": {"record_type": record_type, "record_id": record_id},
            "projects": [{"project_id": r["project_id"], "portal_id": r["portal_id"], "name": r["name"],
                          "status": r["status"], "progress_percent": r["progress_percent"],
                          "owner_id": r["owner_id"], "group_id": r["group_id"],
                          "linked_at": r["changed_at"].isoformat()} for r in rows],
        })

    async def _project_records(self, request: Request, caller: Caller, *, path: ProjectPath) -> Response:
        async with self.service.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT l.record_type, l.record_id, l.portal_id, r.name, l.changed_at
                   FROM links l
                   JOIN integrations i ON i.org_id = l.org_id AND i.state = 'enabled' AND i.portal_id = l.portal_id
                   LEFT JOIN crm_records r ON r.org_id = l.org_id AND r.record_type = l.record_type
                        AND r.record_id = l.record_id
                   WHERE l.org_id = $1 AND l.project_id = $2 AND l.active
                   ORDER BY l.record_type, l.record_id""", caller.org_id, path.project_id)
        return JSONResponse({
            "project_id": path.project_id,
            "records": [{"record_type": r["record_type"], "record_id": r["record_id"], "name": r["name"],
                         "portal_id": r["portal_id"], "linked_at": r["changed_at"].isoformat()} for r in rows],
        })

    async def _rotate_key(self, request: Request, caller: Caller, *, path: OrgPath, body: MintRequest) -> Response:
        org = path.org_id
        key = domain.new_service_key()
        key_id = uuid.uuid4()
        sha = domain.key_sha256(key)
        at = datetime.now(timezone.utc)
        envelope = make_event(ServiceKeyRotated(key_id=key_id, key_sha256=sha, rotated_by=body.requested_by,
                                                rotated_at=at),
                              org_id=org, entity_key=f"{org}:service_key", producer=self.service.name, origin="hub")
        async with self.service.pool.acquire() as conn, conn.transaction():
            await storage.store_service_key(conn, org, key_id, sha, body.requested_by)
            await write_outbox(conn, topic=self.service.topics(ServiceKeyRotated.TOPIC), key=envelope.entity_key,
                               value=encode(envelope), headers=current_trace_headers(), event_id=envelope.event_id)
        self.service.relay.wake()
        # The audit trail of every key minted: org, who, when, from where; never the key nor its hash.
        log.info("service key minted", org_id=org, key_id=str(key_id), minted_by=body.requested_by,
                 credential="admin token", client=request.client.host if request.client else None,
                 minted_at=at.isoformat())
        return JSONResponse({"org_id": org, "key_id": str(key_id), "service_key": key}, status_code=201,
                            headers={"Cache-Control": "no-store"})

    async def _openapi(self, request: Request, caller: None) -> Response:
        return JSONResponse(OPENAPI)


_PROJECT = {
    "type": "object",
    "properties": {
        "project_id": {"type": "string"}, "portal_id": {"type": "string"}, "name": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "completed", "on_hold", "archived"]},
        "progress_percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "owner_id": {"type": "string"}, "group_id": {"type": ["string", "null"]},
        "linked_at": {"type": "string", "format": "date-time"},
    },
    "required": ["project_id", "portal_id", "name", "status", "progress_percent"],
}
_ERROR = {"description": "missing or invalid service key",
          "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hub linking read API", "version": "1.0.0",
             "description": "Projects linked to CRM records (S2) and records linked to a project. Authenticate with "
                            "the org's service key (S24): `Authorization: Bearer <key>` or `X-Hub-Service-Key`. "
                            "A disabled integration returns no links (S7)."},
    "components": {"securitySchemes": {
        "serviceKey": {"type": "http", "scheme": "bearer"},
        "serviceKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Hub-Service-Key"},
        "adminToken": {"type": "http", "scheme": "bearer", "description": "HUB_LINKING_ADMIN_TOKEN"},
    }},
    "security": [{"serviceKey": []}, {"serviceKeyHeader": []}],
    "paths": {
        "/api/v1/records/{record_type}/{record_id}/projects": {"get": {
            "summary": "Projects linked to an account, contact, deal or lead, with status and progress (S2)",
            "parameters": [
                {"name": "record_type", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": list(RECORD_TYPES)}},
                {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "linked projects", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "record": {"type": "object"}, "projects": {"type": "array", "items": _PROJECT}}}}}},
                "401": _ERROR, "422": {"description": "unknown record type or invalid id"},
            },
        }},
        "/api/v1/projects/{project_id}/records": {"get": {
            "summary": "CRM records linked to a project",
            "parameters": [{"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "linked records", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"project_id": {"type": "string"}, "records": {"type": "array", "items": {
                        "type": "object", "properties": {
                            "record_type": {"type": "string", "enum": list(RECORD_TYPES)},
                            "record_id": {"type": "string"}, "name": {"type": ["string", "null"]},
                            "portal_id": {"type": "string"}, "linked_at": {"type": "string", "format": "date-time"},
                        }}}}}}}},
                "401": _ERROR,
            },
        }},
        "/api/v1/orgs/{org_id}/service-key": {"post": {
            "summary": "Generate or regenerate the org's service key (S24); the old key stops working at once",
            "security": [{"adminToken": []}],
            "parameters": [{"name": "org_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "201": {"description": "the new key, shown once", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"org_id": {"type": "string"}, "key_id": {"type": "string"},
                                                     "service_key": {"type": "string"}}}}}},
                "401": _ERROR,
            },
        }},
    },
}
