"""Zoho Projects REST v3 (`/api/v3/portal/{portal_id}/...`): projects, tasks, comments, users, clients.

Projects has no change notifications an app can subscribe to (only workflow-rule webhooks configured in
its UI), so the PM connector polls with `last_modified_time` and treats a webhook as a hint to poll now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from hub_zoho.api import ItemResult, ZohoApi, item_results

PER_PAGE = 100


class ProjectsClient:
    def __init__(self, api: ZohoApi) -> None:
        self.api = api

    def url(self, portal_id: str, path: str) -> str:
        return f"{self.api.org.projects_base}/api/v3/portal/{portal_id}/{path.lstrip('/')}"

    async def _list(self, portal_id: str, path: str, key: str, since: datetime | None) -> AsyncIterator[list[dict[str, Any]]]:
        page = 1
        while True:
            params: dict[str, Any] = {"page": page, "per_page": PER_PAGE}
            if since is not None:
                params["last_modified_time"] = since.isoformat(timespec="milliseconds")
            resp = await self.api.request("GET", self.url(portal_id, path), params=params)
            body = resp.json() if resp.status_code != 204 else {}
            yield body.get(key, [])
            if not body.get("page_info", {}).get("has_next_page"):
                return
            page += 1

    def portal_list(self, portal_id: str, kind: str, since: datetime | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """Every record of a kind in the portal (users, clients, projects, tasks, comments) changed after `since`."""
        return self._list(portal_id, kind, kind, since)

    async def portals(self) -> list[dict[str, Any]]:
        resp = await self.api.request("GET", f"{self.api.org.projects_base}/api/v3/portals")
        return list(resp.json().get("portals", []))

    def projects(self, portal_id: str, since: datetime | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        return self._list(portal_id, "projects", "projects", since)

    def tasks(self, portal_id: str, project_id: str, since: datetime | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        return self._list(portal_id, f"projects/{project_id}/tasks", "tasks", since)

    def comments(self, portal_id: str, project_id: str, task_id: str,
                 since: datetime | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        return self._list(portal_id, f"projects/{project_id}/tasks/{task_id}/comments", "comments", since)

    def users(self, portal_id: str) -> AsyncIterator[list[dict[str, Any]]]:
        return self._list(portal_id, "users", "users", None)

    def clients(self, portal_id: str) -> AsyncIterator[list[dict[str, Any]]]:
        return self._list(portal_id, "clients", "clients", None)

    async def get_task(self, portal_id: str, project_id: str, task_id: str) -> dict[str, Any] | None:
        resp = await self.api.request("GET", self.url(portal_id, f"projects/{project_id}/tasks/{task_id}"))
        tasks = resp.json().get("tasks", []) if resp.status_code != 204 else []
        return tasks[0] if tasks else None

    async def create_task(self, portal_id: str, project_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        resp = await self.api.request("POST", self.url(portal_id, f"projects/{project_id}/tasks"), json=fields)
        return resp.json()["tasks"][0]

    async def update_task(self, portal_id: str, project_id: str, task_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        resp = await self.api.request("PATCH", self.url(portal_id, f"projects/{project_id}/tasks/{task_id}"), json=fields)
        return resp.json()["tasks"][0]

    async def delete_task(self, portal_id: str, project_id: str, task_id: str) -> None:
        await self.api.request("DELETE", self.url(portal_id, f"projects/{project_id}/tasks/{task_id}"))

    async def update_tasks(self, portal_id: str, project_id: str, tasks: list[dict[str, Any]]) -> list[ItemResult]:
        """Several tasks in one call; Zoho answers 207 when only some went through."""
        resp = await self.api.request("PATCH", self.url(portal_id, f"projects/{project_id}/tasks"), json={"tasks": tasks})
        return item_results(resp, "tasks")
