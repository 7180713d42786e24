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
Errors (the hub's one shape, {"error", "detail", ...}): 404 unknown kind/record, 409 refused by the tool's rules
({reason_code, reason, details}), 422 invalid. No credentials: a local test tool (every route says auth=None).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal


from hub_platform.http import Body, HttpError, HubApi, Query
from hub_sandbox.client import SandboxClient
from hub_sandbox.domain import Rejected
from hub_sandbox.kinds import UnknownKind
from hub_sandbox.world import InvalidRecord, NotFound

if TYPE_CHECKING:
    from hub_platform.service import HubService

Side = Literal["crm", "pm"]
Fields = Annotated[dict[str, Any], Body(default_factory=dict, description="the record's fields")]
OrgId = Annotated[str | None, Query(max_length=80)]
ActingUser = Annotated[str | None, Query(max_length=100)]


def _answers_refusals(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The tool's refusals as HTTP answers (409 rule, 404 unknown, 422 invalid)."""

    @functools.wraps(fn)
    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except Rejected as exc:
            raise HttpError(409, "rejected", exc.reason, reason_code=exc.code, reason=exc.reason,
                            details=exc.details) from None
        except (NotFound, UnknownKind) as exc:
            raise HttpError(404, "not_found", str(exc).strip("'\"")) from None
        except InvalidRecord as exc:
            raise HttpError(422, "invalid", str(exc)) from None

    return endpoint


def build_api(service: HubService) -> HubApi:
    api = HubApi()

    def client(org_id: str | None, acting_user_id: str | None) -> SandboxClient:
        return SandboxClient.of(service, org_id=org_id or None, acting_user_id=acting_user_id or None)

    @api.get("/sandbox/counters", auth=None, summary="commands applied/rejected/duplicate and events emitted, by type")
    @_answers_refusals
    async def counters(org_id: OrgId = None, acting_user_id: ActingUser = None, all_orgs: bool = False) -> Any:
        return await client(org_id, acting_user_id).counters(all_orgs=all_orgs)

    @api.get("/sandbox/log", auth=None, summary="one row per message the sandbox saw or sent")
    @_answers_refusals
    async def log(org_id: OrgId = None, acting_user_id: ActingUser = None,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Any:
        return {"messages": await client(org_id, acting_user_id).log(limit)}

    @api.post("/sandbox/requests/{request_type}", auth=None, status_code=202,
              summary="a CRM user's request onto hub.requests")
    @_answers_refusals
    async def request(request_type: str, body: Fields, org_id: OrgId = None, acting_user_id: ActingUser = None) -> Any:
        return await client(org_id, acting_user_id).request(request_type, **body)

    @api.post("/sandbox/{side}/{kind}", auth=None, summary="create or change a record (`id` in the body changes one)")
    @_answers_refusals
    async def upsert(side: Side, kind: str, body: Fields, org_id: OrgId = None, acting_user_id: ActingUser = None) -> Any:
        return await client(org_id, acting_user_id).upsert(side, kind, body)

    @api.get("/sandbox/{side}/{kind}", auth=None, summary="what the side holds now")
    @_answers_refusals
    async def list_(side: Side, kind: str, org_id: OrgId = None, acting_user_id: ActingUser = None,
                    include_deleted: bool = False) -> Any:
        return {"records": await client(org_id, acting_user_id).list(side, kind, include_deleted=include_deleted)}

    @api.get("/sandbox/{side}/{kind}/{id}", auth=None, summary="one record")
    @_answers_refusals
    async def get(side: Side, kind: str, id: str, org_id: OrgId = None, acting_user_id: ActingUser = None) -> Any:
        rec = await client(org_id, acting_user_id).get(side, kind, id)
        if rec is None:
            raise NotFound(f"no {side} {kind} {id!r}")
        return rec

    @api.patch("/sandbox/{side}/{kind}/{id}", auth=None, summary="change an existing record")
    @_answers_refusals
    async def update(side: Side, kind: str, id: str, body: Fields, org_id: OrgId = None,
                     acting_user_id: ActingUser = None) -> Any:
        return await client(org_id, acting_user_id).update(side, kind, id, body)

    @api.delete("/sandbox/{side}/{kind}/{id}", auth=None, summary="delete / remove / deactivate it")
    @_answers_refusals
    async def delete(side: Side, kind: str, id: str, org_id: OrgId = None, acting_user_id: ActingUser = None) -> Any:
        return await client(org_id, acting_user_id).delete(side, kind, id)

    @api.post("/sandbox/{side}/{kind}/{id}/lock", auth=None,
              summary='lock it against the integration\'s changes (body {"locked": false} unlocks)')
    @_answers_refusals
    async def lock(side: Side, kind: str, id: str, body: Fields, org_id: OrgId = None,
                   acting_user_id: ActingUser = None) -> Any:
        locked = body.get("locked", True)
        if not isinstance(locked, bool):
            raise InvalidRecord("locked must be true or false")
        return await client(org_id, acting_user_id).lock(side, kind, id, locked)

    return api
