"""Read-only HTTP API of the task-mirroring service: the per-task sync history (an audit trail).

GET /api/v1/tasks/{hub_task_id}/history
GET /api/v1/history?org_id=...&pm_task_id=...  (or &crm_task_id=...)
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub_tasks import storage


def routes(service: Any) -> list[Route]:
    async def task_history(request: Request) -> JSONResponse:
        try:
            hub_task_id = uuid.UUID(request.path_params["hub_task_id"])
        except ValueError:
            return JSONResponse({"error": "hub_task_id must be a UUID"}, status_code=400)
        async with service.pool.acquire() as conn:
            m = await conn.fetchrow("SELECT * FROM task_mappings WHERE hub_task_id = $1", hub_task_id)
            if m is None:
                return JSONResponse({"error": f"no task {hub_task_id}"}, status_code=404)
            decisions = await storage.history_of_task(conn, hub_task_id)
        return JSONResponse({"hub_task_id": str(hub_task_id), "org_id": m["org_id"], "pm_task_id": m["pm_task_id"],
                             "crm_task_id": m["crm_task_id"], "record": {"record_type": m["record_type"],
                                                                         "record_id": m["record_id"]},
                             "decisions": decisions})

    async def history(request: Request) -> JSONResponse:
        q = request.query_params
        org_id, pm_task_id, crm_task_id = q.get("org_id"), q.get("pm_task_id"), q.get("crm_task_id")
        if not org_id or not (pm_task_id or crm_task_id):
            return JSONResponse({"error": "org_id and pm_task_id or crm_task_id are required"}, status_code=400)
        async with service.pool.acquire() as conn:
            decisions = await storage.history(conn, org_id, pm_task_id, crm_task_id)
        return JSONResponse({"org_id": org_id, "pm_task_id": pm_task_id, "crm_task_id": crm_task_id,
                             "decisions": decisions})

    return [Route("/api/v1/tasks/{hub_task_id}/history", task_history), Route("/api/v1/history", history)]
