"""Zoho Projects REST v3 (`/api/v3/portal/{portal_id}/...`): projects, tasks, comments, users, clients.

Projects has no change notifications an app can subscribe to (only workflow-rule webhooks configured in
its UI), so the PM connector polls with `last_modified_time` and treats a webhook as a hint to poll now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from hub_zoho.api import ItemResult, ZohoApi, ZohoError, item_results

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
        try:
            resp = await self.api.request("GET", self.url(portal_id, f"projects/{project_id}/tasks/{task_id}"))
        except ZohoError as exc:
            if exc.status == 404:
                return None
            raise
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

    # -- projects, project groups, clients, users (portal and client users) -----------------------------

    async def get(self, portal_id: str, kind: str, record_id: str) -> dict[str, Any] | None:
        """One project, projectgroup, client or user as Projects has it now; None when it is gone."""
        try:
            resp = await self.api.request("GET", self.url(portal_id, f"{kind}/{record_id}"))
        except ZohoError as exc:
            if exc.status == 404:
                return None
            raise
        rows = resp.json().get(kind, []) if resp.status_code != 204 else []
        return rows[0] if rows else None

    async def create(self, portal_id: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        resp = await self.api.request("POST", self.url(portal_id, kind), json=fields)
        return resp.json()[kind][0]

    async def update(self, portal_id: str, kind: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        resp = await self.api.request("PATCH", self.url(portal_id, f"{kind}/{record_id}"), json=fields)
        return resp.json()[kind][0]

    async def add_project_members(self, portal_id: str, project_id: str, members: str,
                                  items: list[dict[str, Any]]) -> list[ItemResult]:
        """Add portal users (`members="users"`) or client users (`"clients"`) to a project; 207 when only some went in."""
        key = "users" if members == "users" else "client_users"
        resp = await self.api.request("POST", self.url(portal_id, f"projects/{project_id}/{members}"), json={key: items})
        return item_results(resp, members)

    async def ids(self, portal_id: str, kind: str) -> set[str]:
        """Every id of a kind in the portal now (the poll's deletion sweep: Projects has no deleted-records list)."""
        out: set[str] = set()
        async for page in self._list(portal_id, kind, kind, None):
            out.update(str(r["id"]) for r in page)
        return out

    async def update_tasks(self, portal_id: str, project_id: str, tasks: list[dict[str, Any]]) -> list[ItemResult]:
        """Several tasks in one call; Zoho answers 207 when only some went through."""
        resp = await self.api.request("PATCH", self.url(portal_id, f"projects/{project_id}/tasks"), json={"tasks": tasks})
        return item_results(resp, "tasks")
