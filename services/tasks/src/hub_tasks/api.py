"""Read-only HTTP API of the task-mirroring service: the per-task sync history (an audit trail).

GET /api/v1/tasks/{hub_task_id}/history[?limit=&after=]
GET /api/v1/history?pm_task_id=... (or crm_task_id=...)[&limit=&after=]

Both need the org's service key (S24); the org is the key's, as in linking's read API, so a
task of another org is "not found" rather than "forbidden" (its existence is not revealed).
Decisions page by id (`next` is the cursor of the following page).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from hub_platform.http import Caller, HttpError, HubApi, Page, Query, ServiceKeyAuth, paged
from hub_platform.service_keys import org_of_key
from hub_tasks import api_queries, storage

if TYPE_CHECKING:
    from hub_platform.service import HubService

TaskId = Field(None, min_length=1, max_length=100)


class HistoryQuery(Page):
    pm_task_id: str | None = TaskId
    crm_task_id: str | None = TaskId

    @model_validator(mode="after")
    def _one_task(self) -> HistoryQuery:
        if not (self.pm_task_id or self.crm_task_id):
            raise ValueError("give pm_task_id or crm_task_id")
        return self


def build_api(service: HubService) -> HubApi:
    api = HubApi()
    org_key = ServiceKeyAuth(lambda: service.pool, org_of_key)

    @api.get("/api/v1/tasks/{hub_task_id}/history", auth=org_key,
             summary="every mirroring decision about one task, and why (paged)")
    async def task_history(caller: Caller, hub_task_id: uuid.UUID, query: Annotated[Page, Query()]) -> dict[str, Any]:
        async with service.pool.acquire() as conn:  # type: ignore[union-attr]
            m = await api_queries.mapping_of_org(conn, hub_task_id, caller.org_id)
            if m is None:
                raise HttpError(404, "not_found", f"no task {hub_task_id}")
            decisions = await storage.history_of_task(conn, hub_task_id, after=query.after, limit=query.limit + 1)
        page = paged(decisions, query, lambda d: d["id"])
        return {"hub_task_id": str(hub_task_id), "org_id": m["org_id"], "pm_task_id": m["pm_task_id"],
                "crm_task_id": m["crm_task_id"], "record": {"record_type": m["record_type"], "record_id": m["record_id"]},
                "decisions": page["items"], "next": page["next"]}

    @api.get("/api/v1/history", auth=org_key, summary="the same, by upstream task id (paged)")
    async def history(caller: Caller, query: Annotated[HistoryQuery, Query()]) -> dict[str, Any]:
        async with service.pool.acquire() as conn:  # type: ignore[union-attr]
            decisions = await storage.history(conn, caller.org_id, query.pm_task_id, query.crm_task_id,
                                              after=query.after, limit=query.limit + 1)
        page = paged(decisions, query, lambda d: d["id"])
        return {"org_id": caller.org_id, "pm_task_id": query.pm_task_id, "crm_task_id": query.crm_task_id,
                "decisions": page["items"], "next": page["next"]}

    return api
