"""Read-only HTTP API of the task-mirroring service: the per-task sync history (an audit trail).

GET /api/v1/tasks/{hub_task_id}/history[?limit=&after=]
GET /api/v1/history?pm_task_id=... (or crm_task_id=...)[&limit=&after=]

Both need the org's service key (S24); the org is the key's, as in linking's read API, so a
task of another org is "not found" rather than "forbidden" (its existence is not revealed).
Decisions page by id (`next` is the cursor of the following page).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub_platform.http import Caller, HttpError, Input, Page, ServiceKeyAuth, endpoint, paged
from hub_platform.service_keys import org_of_key
from hub_tasks import storage

TaskId = Field(None, min_length=1, max_length=100)


class TaskPath(Input):
    hub_task_id: uuid.UUID


class HistoryQuery(Page):
    pm_task_id: str | None = TaskId
    crm_task_id: str | None = TaskId

    @model_validator(mode="after")
    def _one_task(self) -> HistoryQuery:
        if not (self.pm_task_id or self.crm_task_id):
            raise ValueError("give pm_task_id or crm_task_id")
        return self


def routes(service: Any) -> list[Route]:
    org_key = ServiceKeyAuth(lambda: service.pool, org_of_key)

    @endpoint(org_key, path=TaskPath, query=Page)
    async def task_history(request: Request, caller: Caller, *, path: TaskPath, query: Page) -> JSONResponse:
        async with service.pool.acquire() as conn:
            m = await conn.fetchrow("SELECT * FROM task_mappings WHERE hub_task_id = $1 AND org_id = $2",
                                    path.hub_task_id, caller.org_id)
            if m is None:
                raise HttpError(404, "not_found", f"no task {path.hub_task_id}")
            decisions = await storage.history_of_task(conn, path.hub_task_id, after=query.after,
                                                      limit=query.limit + 1)
        page = paged(decisions, query, lambda d: d["id"])
        return JSONResponse({"hub_task_id": str(path.hub_task_id), "org_id": m["org_id"], "pm_task_id": m["pm_task_id"],
                             "crm_task_id": m["crm_task_id"], "record": {"record_type": m["record_type"],
                                                                         "record_id": m["record_id"]},
                             "decisions": page["items"], "next": page["next"]})

    @endpoint(org_key, query=HistoryQuery)
    async def history(request: Request, caller: Caller, *, query: HistoryQuery) -> JSONResponse:
        async with service.pool.acquire() as conn:
            decisions = await storage.history(conn, caller.org_id, query.pm_task_id, query.crm_task_id,
                                              after=query.after, limit=query.limit + 1)
        page = paged(decisions, query, lambda d: d["id"])
        return JSONResponse({"org_id": caller.org_id, "pm_task_id": query.pm_task_id, "crm_task_id": query.crm_task_id,
                             "decisions": page["items"], "next": page["next"]})

    return [Route("/api/v1/tasks/{hub_task_id}/history", task_history, methods=["GET"]),
            Route("/api/v1/history", history, methods=["GET"])]
