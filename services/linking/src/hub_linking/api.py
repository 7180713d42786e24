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

import hmac
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub_linking import domain, storage
from hub_platform.outbox import write_outbox
from hub_platform.telemetry import current_trace_headers
from hub_schema import encode, make_event
from hub_schema.events.linking import ServiceKeyRotated

RECORD_TYPES = ("account", "contact", "deal", "lead")


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-hub-service-key") or None


def _unauthorized() -> Response:
    return JSONResponse({"error": "unauthorized", "detail": "a valid service key is required"}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


class LinkingApi:
    """Routes bound to the running service (its pool, settings, relay)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/records/{record_type}/{record_id}/projects", self.record_projects, methods=["GET"]),
            Route("/api/v1/projects/{project_id}/records", self.project_records, methods=["GET"]),
            Route("/api/v1/orgs/{org_id}/service-key", self.rotate_key, methods=["POST"]),
            Route("/api/v1/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def _org(self, request: Request) -> str | None:
        key = _presented_key(request)
        if not key:
            return None
        sha = domain.key_sha256(key)
        async with self.service.pool.acquire() as conn:
            row = await storage.org_of_key(conn, sha)
        if row is None or not hmac.compare_digest(row["key_sha256"], sha):
            return None
        return row["org_id"]

    async def record_projects(self, request: Request) -> Response:
        org = await self._org(request)
        if org is None:
            return _unauthorized()
        record_type = request.path_params["record_type"]
        record_id = request.path_params["record_id"]
        if record_type not in RECORD_TYPES:
            return JSONResponse({"error": "not_found", "detail": f"unknown record type {record_type}"}, status_code=404)
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

    async def project_records(self, request: Request) -> Response:
        org = await self._org(request)
        if org is None:
            return _unauthorized()
        project_id = request.path_params["project_id"]
        async with self.service.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT l.record_type, l.record_id, l.portal_id, r.name, l.changed_at
                   FROM links l
                   JOIN integrations i ON i.org_id = l.org_id AND i.state = 'enabled' AND i.portal_id = l.portal_id
                   LEFT JOIN crm_records r ON r.org_id = l.org_id AND r.record_type = l.record_type
                        AND r.record_id = l.record_id
                   WHERE l.org_id = $1 AND l.project_id = $2 AND l.active
                   ORDER BY l.record_type, l.record_id""", org, project_id)
        return JSONResponse({
            "project_id": project_id,
            "records": [{"record_type": r["record_type"], "record_id": r["record_id"], "name": r["name"],
                         "portal_id": r["portal_id"], "linked_at": r["changed_at"].isoformat()} for r in rows],
        })

    async def rotate_key(self, request: Request) -> Response:
        token = _presented_key(request) or ""
        expected = self.service.settings.admin_token.get_secret_value()
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return _unauthorized()
        org = request.path_params["org_id"]
        if not 1 <= len(org) <= 80:
            return JSONResponse({"error": "invalid", "detail": "bad org id"}, status_code=400)
        key = domain.new_service_key()
        key_id = uuid.uuid4()
        from datetime import datetime, timezone

        envelope = make_event(ServiceKeyRotated(key_id=key_id, rotated_by="admin-token",
                                                rotated_at=datetime.now(timezone.utc)),
                              org_id=org, entity_key=f"{org}:service_key", producer=self.service.name, origin="hub")
        async with self.service.pool.acquire() as conn, conn.transaction():
            await storage.store_service_key(conn, org, key_id, domain.key_sha256(key), "admin-token")
            await write_outbox(conn, topic=self.service.topics(ServiceKeyRotated.TOPIC), key=envelope.entity_key,
                               value=encode(envelope), headers=current_trace_headers(), event_id=envelope.event_id)
        self.service.relay.wake()
        return JSONResponse({"org_id": org, "key_id": str(key_id), "service_key": key}, status_code=201,
                            headers={"Cache-Control": "no-store"})

    async def openapi(self, request: Request) -> Response:
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
                "401": _ERROR, "404": {"description": "unknown record type"},
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
