"""HTTP API: the delivery log and recipients' preferences.

GET  /api/v1/deliveries?request_id=<uuid> | ?recipient=<email> [&org_id=][&limit=&after=]
                                                 the delivery log, newest first (operator token)
POST /api/v1/deliveries/{request_id}/retry       queue a failed mail again (operator token)
GET  /api/v1/orgs/{org_id}/preferences/{email}   a recipient's opt-outs with this org
PUT  /api/v1/orgs/{org_id}/preferences/{email}   {"opted_out": ["import_outcome", ...]}: the full set of
                                                 optional kinds the person does not want from this org
Opt-outs are per (org, address): the org's service key changes only that org's (another org's is a
403), the operator token any org's. Only optional kinds (domain.OPTIONAL_KINDS) can be turned off;
asking to turn off a failure e-mail is a 422 that names the kind.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub_notifications import domain, storage
from hub_platform.http import AnyOf, Caller, HttpError, Input, Page, ServiceKeyAuth, TokenAuth, endpoint, paged
from hub_platform.service_keys import org_of_key

if TYPE_CHECKING:
    from hub_platform.service import HubService

Email = Field(min_length=3, max_length=254)


def _json(row: Any) -> dict[str, Any]:
    out = {}
    for k, v in dict(row).items():
        out[k] = v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
    return out


class DeliveriesQuery(Page):
    request_id: uuid.UUID | None = None
    recipient: str | None = Field(None, min_length=3, max_length=254)
    org_id: str | None = Field(None, min_length=1, max_length=80)

    @model_validator(mode="after")
    def _something_to_find(self) -> DeliveriesQuery:
        if self.request_id is None and not self.recipient:
            raise ValueError("give request_id or recipient")
        return self


class RequestPath(Input):
    request_id: uuid.UUID


class PreferencePath(Input):
    org_id: str = Field(min_length=1, max_length=80)
    email: str = Email

    @field_validator("email")
    @classmethod
    def _deliverable(cls, v: str) -> str:
        problem = domain.address_problem(v)
        if problem:
            raise ValueError(f"not a deliverable address: {problem}")
        return v.lower()


class PreferencesBody(Input):
    opted_out: list[str] = Field(max_length=50)


class Api:
    def __init__(self) -> None:
        self.service: HubService | None = None
        operator = TokenAuth(lambda: self._settings().operator_token, "operator", "HUB_OPERATOR_TOKEN")
        org_or_operator = AnyOf(ServiceKeyAuth(lambda: self.pool, org_of_key), operator)
        self.deliveries = endpoint(operator, query=DeliveriesQuery)(self._deliveries)
        self.retry = endpoint(operator, path=RequestPath)(self._retry)
        self.get_preferences = endpoint(org_or_operator, path=PreferencePath)(self._get_preferences)
        self.put_preferences = endpoint(org_or_operator, path=PreferencePath, body=PreferencesBody)(self._put_preferences)

    def _settings(self) -> Any:
        assert self.service is not None, "service not built"
        return self.service.settings

    @property
    def pool(self) -> Any:
        if self.service is None or self.service.pool is None:
            raise HttpError(503, "not_ready", "the service is starting")
        return self.service.pool

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/deliveries", self.deliveries, methods=["GET"]),
            Route("/api/v1/deliveries/{request_id}/retry", self.retry, methods=["POST"]),
            Route("/api/v1/orgs/{org_id}/preferences/{email}", self.get_preferences, methods=["GET"]),
            Route("/api/v1/orgs/{org_id}/preferences/{email}", self.put_preferences, methods=["PUT"]),
        ]

    async def _deliveries(self, request: Request, caller: Caller, *, query: DeliveriesQuery) -> JSONResponse:
        async with self.pool.acquire() as conn:
            rows = await storage.find_deliveries(conn, request_id=query.request_id, recipient=query.recipient,
                                                 org_id=query.org_id, before=query.after, limit=query.limit + 1)
        page = paged([_json(r) for r in rows], query, lambda d: d["seq"])
        return JSONResponse({"deliveries": page["items"], "next": page["next"]})

    async def _retry(self, request: Request, caller: Caller, *, path: RequestPath) -> JSONResponse:
        async with self.pool.acquire() as conn:
            ok = await storage.retry_failed(conn, path.request_id)
        if not ok:
            raise HttpError(409, "conflict", "no failed delivery with this request_id")
        return JSONResponse({"request_id": str(path.request_id), "state": "pending"}, status_code=202)

    async def _get_preferences(self, request: Request, caller: Caller, *, path: PreferencePath) -> JSONResponse:
        caller.require_org(path.org_id)
        async with self.pool.acquire() as conn:
            rows = await storage.preferences_of(conn, path.org_id, path.email)
        return JSONResponse({"org_id": path.org_id, "email": path.email,
                             "opted_out": [r["kind"] for r in rows if r["opted_out"]],
                             "optional_kinds": sorted(domain.OPTIONAL_KINDS)})

    async def _put_preferences(self, request: Request, caller: Caller, *, path: PreferencePath,
                               body: PreferencesBody) -> JSONResponse:
        caller.require_org(path.org_id)
        refused = sorted(set(body.opted_out) - domain.OPTIONAL_KINDS)
        if refused:
            raise HttpError(422, "not_optional", f"these kinds cannot be turned off: {', '.join(refused)}",
                            optional_kinds=sorted(domain.OPTIONAL_KINDS))
        now = datetime.now(timezone.utc)
        by = "api:operator" if caller.kind == "operator" else "api:service-key"
        async with self.pool.acquire() as conn, conn.transaction():
            for kind in sorted(domain.OPTIONAL_KINDS):
                await storage.set_preference(conn, path.org_id, path.email, kind, kind in body.opted_out, now, by)
        return JSONResponse({"org_id": path.org_id, "email": path.email, "opted_out": sorted(set(body.opted_out))})
