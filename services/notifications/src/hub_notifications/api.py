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
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from hub_notifications import domain, storage
from hub_platform.http import (
    AnyOf, Caller, HttpError, HubApi, Input, Page, Path, Query, ServiceKeyAuth, TokenAuth, paged,
)
from hub_platform.service_keys import org_of_key

if TYPE_CHECKING:
    from hub_platform.service import HubService


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


def _deliverable(v: str) -> str:
    problem = domain.address_problem(v)
    if problem:
        raise ValueError(f"not a deliverable address: {problem}")
    return v.lower()


OrgId = Annotated[str, Path(min_length=1, max_length=80)]
Email = Annotated[str, Path(min_length=3, max_length=254), AfterValidator(_deliverable)]


class PreferencesBody(Input):
    opted_out: list[str] = Field(max_length=50)


def build_api(service: HubService) -> HubApi:
    api = HubApi()

    def pool() -> Any:
        if service.pool is None:
            raise HttpError(503, "not_ready", "the service is starting")
        return service.pool

    operator = TokenAuth(lambda: service.settings.operator_token, "operator", "HUB_OPERATOR_TOKEN")  # type: ignore[attr-defined]
    org_or_operator = AnyOf(ServiceKeyAuth(pool, org_of_key), operator)

    @api.get("/api/v1/deliveries", auth=operator, summary="the delivery log, newest first (paged)")
    async def deliveries(query: Annotated[DeliveriesQuery, Query()]) -> dict[str, Any]:
        async with pool().acquire() as conn:
            rows = await storage.find_deliveries(conn, request_id=query.request_id, recipient=query.recipient,
                                                 org_id=query.org_id, before=query.after, limit=query.limit + 1)
        page = paged([_json(r) for r in rows], query, lambda d: d["seq"])
        return {"deliveries": page["items"], "next": page["next"]}

    @api.post("/api/v1/deliveries/{request_id}/retry", auth=operator, status_code=202,
              summary="sends a failed mail again")
    async def retry(request_id: uuid.UUID) -> dict[str, Any]:
        async with pool().acquire() as conn:
            ok = await storage.retry_failed(conn, request_id)
        if not ok:
            raise HttpError(409, "conflict", "no failed delivery with this request_id")
        return {"request_id": str(request_id), "state": "pending"}

    @api.get("/api/v1/orgs/{org_id}/preferences/{email}", auth=org_or_operator,
             summary="a recipient's opt-outs in that org")
    async def get_preferences(caller: Caller, org_id: OrgId, email: Email) -> dict[str, Any]:
        caller.require_org(org_id)
        async with pool().acquire() as conn:
            rows = await storage.preferences_of(conn, org_id, email)
        return {"org_id": org_id, "email": email, "opted_out": [r["kind"] for r in rows if r["opted_out"]],
                "optional_kinds": sorted(domain.OPTIONAL_KINDS)}

    @api.put("/api/v1/orgs/{org_id}/preferences/{email}", auth=org_or_operator,
             summary="sets them (only optional kinds)")
    async def put_preferences(caller: Caller, org_id: OrgId, email: Email, body: PreferencesBody) -> dict[str, Any]:
        caller.require_org(org_id)
        refused = sorted(set(body.opted_out) - domain.OPTIONAL_KINDS)
        if refused:
            raise HttpError(422, "not_optional", f"these kinds cannot be turned off: {', '.join(refused)}",
                            optional_kinds=sorted(domain.OPTIONAL_KINDS))
        now = datetime.now(timezone.utc)
        by = "api:operator" if caller.kind == "operator" else "api:service-key"
        async with pool().acquire() as conn, conn.transaction():
            for kind in sorted(domain.OPTIONAL_KINDS):
                await storage.set_preference(conn, org_id, email, kind, kind in body.opted_out, now, by)
        return {"org_id": org_id, "email": email, "opted_out": sorted(set(body.opted_out))}

    return api
