"""HTTP API: the delivery log and recipients' preferences.

GET  /api/v1/deliveries?request_id=<uuid> | ?recipient=<email>[&limit=]  the delivery log
POST /api/v1/deliveries/{request_id}/retry     queue a failed mail again (operator policy)
GET  /api/v1/preferences/{email}               a recipient's opt-outs
PUT  /api/v1/preferences/{email}               {"opted_out": ["import_outcome", ...]}: the full set of
                                               optional kinds the person does not want (others are on)
Only optional kinds (domain.OPTIONAL_KINDS) can be turned off; asking to turn off a
failure e-mail is a 422 that names the kind. The endpoints sit on the internal
network beside /metrics (no end-user authentication here; the CRM UI that
calls them authenticates its users).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub_notifications import domain, storage

if TYPE_CHECKING:
    from hub_platform.service import HubService


def _json(row: Any) -> dict[str, Any]:
    out = {}
    for k, v in dict(row).items():
        out[k] = v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
    return out


class Api:
    def __init__(self) -> None:
        self.service: HubService | None = None

    @property
    def pool(self) -> Any:
        assert self.service is not None and self.service.pool is not None, "service not started"
        return self.service.pool

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/deliveries", self.deliveries, methods=["GET"]),
            Route("/api/v1/deliveries/{request_id}/retry", self.retry, methods=["POST"]),
            Route("/api/v1/preferences/{email}", self.get_preferences, methods=["GET"]),
            Route("/api/v1/preferences/{email}", self.put_preferences, methods=["PUT"]),
        ]

    async def deliveries(self, request: Request) -> JSONResponse:
        rid, recipient = request.query_params.get("request_id"), request.query_params.get("recipient")
        try:
            request_id = uuid.UUID(rid) if rid else None
            limit = min(int(request.query_params.get("limit", "100")), 1000)
        except ValueError:
            return JSONResponse({"error": "request_id must be a UUID and limit an integer"}, status_code=400)
        if request_id is None and not recipient:
            return JSONResponse({"error": "give request_id or recipient"}, status_code=400)
        async with self.pool.acquire() as conn:
            rows = await storage.find_deliveries(conn, request_id=request_id, recipient=recipient, limit=limit)
        return JSONResponse({"deliveries": [_json(r) for r in rows]})

    async def retry(self, request: Request) -> JSONResponse:
        try:
            request_id = uuid.UUID(request.path_params["request_id"])
        except ValueError:
            return JSONResponse({"error": "request_id must be a UUID"}, status_code=400)
        async with self.pool.acquire() as conn:
            ok = await storage.retry_failed(conn, request_id)
        if not ok:
            return JSONResponse({"error": "no failed delivery with this request_id"}, status_code=409)
        return JSONResponse({"request_id": str(request_id), "state": "pending"}, status_code=202)

    async def get_preferences(self, request: Request) -> JSONResponse:
        email = request.path_params["email"]
        async with self.pool.acquire() as conn:
            rows = await storage.preferences_of(conn, email)
        return JSONResponse({"email": email.lower(), "opted_out": [r["kind"] for r in rows if r["opted_out"]],
                             "optional_kinds": sorted(domain.OPTIONAL_KINDS)})

    async def put_preferences(self, request: Request) -> JSONResponse:
        email = request.path_params["email"]
        if domain.address_problem(email):
            return JSONResponse({"error": f"not a deliverable address: {domain.address_problem(email)}"}, status_code=422)
        try:
            body = await request.json()
            kinds = body["opted_out"]
            assert isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)
        except Exception:
            return JSONResponse({"error": 'body must be {"opted_out": [kind, ...]}'}, status_code=400)
        refused = sorted(set(kinds) - domain.OPTIONAL_KINDS)
        if refused:
            return JSONResponse({"error": f"these kinds cannot be turned off: {', '.join(refused)}",
                                 "optional_kinds": sorted(domain.OPTIONAL_KINDS)}, status_code=422)
        now = datetime.now(timezone.utc)
        async with self.pool.acquire() as conn, conn.transaction():
            for kind in sorted(domain.OPTIONAL_KINDS):
                await storage.set_preference(conn, email, kind, kind in kinds, now, "api")
        return JSONResponse({"email": email.lower(), "opted_out": sorted(set(kinds))})
