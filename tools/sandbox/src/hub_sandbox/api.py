"""The sandbox's HTTP API: the UI of both tools, for `make demo`, people and tests.

Routes (JSON in and out; `org_id` and `acting_user_id` as query parameters, default org from settings):
  POST   /sandbox/{side}/{kind}            create or change a record (body: its fields, `id` to change one)
  PATCH  /sandbox/{side}/{kind}/{id}       change an existing record
  DELETE /sandbox/{side}/{kind}/{id}       delete / remove / deactivate it
  POST   /sandbox/{side}/{kind}/{id}/lock  lock it against the integration's changes (body {"locked": false} unlocks)
  GET    /sandbox/{side}/{kind}            {"records": [...]} what the side looks like now (?include_deleted=true)
  GET    /sandbox/{side}/{kind}/{id}       one record
  POST   /sandbox/requests/{request_type}  a CRM user's request on hub.requests (body: the request's fields)
  GET    /sandbox/counters                 commands applied/rejected/duplicate and events emitted, by type (?all_orgs=true)
  GET    /sandbox/log                      {"messages": [...]} the same, one row per message (?limit=200)
Errors: 404 unknown kind/record, 409 refused by the tool's rules ({reason_code, reason, details}), 422 invalid.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub_sandbox.client import SandboxClient
from hub_sandbox.domain import Rejected
from hub_sandbox.kinds import UnknownKind
from hub_sandbox.world import InvalidRecord, NotFound

Endpoint = Callable[[Request], Awaitable[Response]]


class Api:
    def __init__(self) -> None:
        self.service: Any = None

    def _client(self, request: Request) -> SandboxClient:
        q = request.query_params
        return SandboxClient.of(self.service, org_id=q.get("org_id") or None, acting_user_id=q.get("acting_user_id") or None)

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidRecord(f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRecord("body must be a JSON object of fields")
        return body

    @staticmethod
    def guarded(fn: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except Rejected as exc:
                return JSONResponse({"error": "rejected", "reason_code": exc.code, "reason": exc.reason, "details": exc.details},
                                    status_code=409)
            except (NotFound, UnknownKind) as exc:
                return JSONResponse({"error": str(exc).strip("'\"")}, status_code=404)
            except InvalidRecord as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)

        return endpoint

    async def upsert(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(await self._client(request).upsert(p["side"], p["kind"], await self._body(request)))

    async def update(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(await self._client(request).update(p["side"], p["kind"], p["id"], await self._body(request)))

    async def delete(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(await self._client(request).delete(p["side"], p["kind"], p["id"]))

    async def get(self, request: Request) -> Response:
        p = request.path_params
        rec = await self._client(request).get(p["side"], p["kind"], p["id"])
        if rec is None:
            raise NotFound(f"no {p['side']} {p['kind']} {p['id']!r}")
        return JSONResponse(rec)

    async def list(self, request: Request) -> Response:
        p = request.path_params
        include = request.query_params.get("include_deleted", "false").lower() in ("1", "true", "yes")
        return JSONResponse({"records": await self._client(request).list(p["side"], p["kind"], include_deleted=include)})

    async def lock(self, request: Request) -> Response:
        p = request.path_params
        body = await self._body(request)
        locked = body.get("locked", True)
        if not isinstance(locked, bool):
            raise InvalidRecord("locked must be true or false")
        return JSONResponse(await self._client(request).lock(p["side"], p["kind"], p["id"], locked))

    async def request(self, request: Request) -> Response:
        out = await self._client(request).request(request.path_params["request_type"], **await self._body(request))
        return JSONResponse(out, status_code=202)

    async def counters(self, request: Request) -> Response:
        all_orgs = request.query_params.get("all_orgs", "false").lower() in ("1", "true", "yes")
        return JSONResponse(await self._client(request).counters(all_orgs=all_orgs))

    async def log(self, request: Request) -> Response:
        limit = min(int(request.query_params.get("limit", "200")), 10_000)
        return JSONResponse({"messages": await self._client(request).log(limit)})

    def routes(self) -> list[BaseRoute]:
        g = self.guarded
        return [
            Route("/sandbox/counters", g(self.counters), methods=["GET"]),
            Route("/sandbox/log", g(self.log), methods=["GET"]),
            Route("/sandbox/requests/{request_type}", g(self.request), methods=["POST"]),
            Route("/sandbox/{side}/{kind}", g(self.upsert), methods=["POST"]),
            Route("/sandbox/{side}/{kind}", g(self.list), methods=["GET"]),
            Route("/sandbox/{side}/{kind}/{id}", g(self.get), methods=["GET"]),
            Route("/sandbox/{side}/{kind}/{id}", g(self.update), methods=["PATCH"]),
            Route("/sandbox/{side}/{kind}/{id}", g(self.delete), methods=["DELETE"]),
            Route("/sandbox/{side}/{kind}/{id}/lock", g(self.lock), methods=["POST"]),
        ]
