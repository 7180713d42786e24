"""The projections part of the batch state: integration, users, projects, links and display names."""

from __future__ import annotations

from hub_tasks import storage
from hub_tasks.records import DisplayName, Integration, Link, Project, User
from hub_tasks.state.base import Rows, _newer


class ProjectionRows(Rows):
    async def _load_integrations(self, orgs: set[str]) -> None:
        todo = sorted(o for o in orgs if o not in self.t.integrations)
        if todo:
            self._take_integrations(todo, await storage.load_integrations(self.conn, todo))

    def _take_integrations(self, todo: list[str], rows: list[Integration]) -> None:
        found = {i.org_id: i for i in rows}
        self.t.integrations.update({o: found.get(o) for o in todo})

    def _merge_users(self, users: list[User], by_crm: set[tuple[str, str]], by_portal: set[tuple[str, str]]) -> None:
        for k in by_crm:
            self.t.users.setdefault(k, None)
        for u in users:
            if self.t.users.get((u.org_id, u.crm_user_id)) is None:
                self.t.users[(u.org_id, u.crm_user_id)] = u
        self.t.users_by_portal |= by_portal

    async def _load_projects(self, keys: set[tuple[str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.projects)
        if todo:
            self._take_projects(todo, await storage.PROJECTS.load(self.conn, todo))

    def _take_projects(self, todo: list[tuple[str, str]], rows: list[Project]) -> None:
        found = {(r.org_id, r.project_id): r for r in rows}
        self.t.projects.update({k: found.get(k) for k in todo})

    def _merge_links(self, links: list[Link], by_project: set[tuple[str, str]],
                     by_record: set[tuple[str, str, str]]) -> None:
        for link in links:
            self.t.links.setdefault((link.org_id, link.project_id, link.record_type, link.record_id), link)
        self.t.links_by_project |= by_project
        self.t.links_by_record |= by_record

    async def _load_names(self, keys: set[tuple[str, str, str]]) -> None:
        todo = sorted(k for k in keys if k not in self.t.names)
        if todo:
            self._take_names(todo, await storage.DISPLAY_NAMES.load(self.conn, todo))

    def _take_names(self, todo: list[tuple[str, str, str]], rows: list[DisplayName]) -> None:
        found = {(r.org_id, r.kind, r.id): r for r in rows}
        self.t.names.update({k: found.get(k) for k in todo})

    async def integration(self, org_id: str) -> Integration | None:
        await self._load_integrations({org_id})
        return self.t.integrations[org_id]

    async def put_integration(self, row: Integration) -> None:
        if _newer(await self.integration(row.org_id), row.revision, "revision"):
            self.t.integrations[row.org_id] = row
            self._touch("integrations", row.org_id)

    async def user(self, org_id: str, crm_user_id: str | None) -> User | None:
        if crm_user_id is None:
            return None
        if (org_id, crm_user_id) not in self.t.users:
            self._merge_users(await storage.load_users(self.conn, [(org_id, crm_user_id)], []), {(org_id, crm_user_id)}, set())
        return self.t.users[(org_id, crm_user_id)]

    async def put_user(self, row: User) -> None:
        if _newer(await self.user(row.org_id, row.crm_user_id), row.revision, "revision"):
            self.t.users[(row.org_id, row.crm_user_id)] = row
            self._touch("users", (row.org_id, row.crm_user_id))

    async def crm_user_of_portal_user(self, org_id: str, portal_user_id: str) -> str | None:
        """The CRM user of a portal user (an active one first), as identity paired them."""
        if (org_id, portal_user_id) not in self.t.users_by_portal:
            self._merge_users(await storage.load_users(self.conn, [], [(org_id, portal_user_id)]), set(), {(org_id, portal_user_id)})
        found = sorted((not u.active, u.crm_user_id) for u in self.t.users.values()
                       if u is not None and u.org_id == org_id and u.portal_user_id == portal_user_id)
        return found[0][1] if found else None

    async def project(self, org_id: str, project_id: str) -> Project | None:
        await self._load_projects({(org_id, project_id)})
        return self.t.projects[(org_id, project_id)]

    async def put_project(self, row: Project) -> None:
        if _newer(await self.project(row.org_id, row.project_id), row.version):
            self.t.projects[(row.org_id, row.project_id)] = row
            self._touch("projects", (row.org_id, row.project_id))

    async def links_of_project(self, org_id: str, portal_id: str, project_id: str) -> list[Link]:
        """The project's linked records, by record type and id."""
        if (org_id, project_id) not in self.t.links_by_project:
            self._merge_links(await storage.load_links(self.conn, [(org_id, project_id)], []), {(org_id, project_id)}, set())
        return sorted((x for x in self.t.links.values() if x.org_id == org_id and x.project_id == project_id
                       and x.portal_id == portal_id and x.linked), key=lambda x: (x.record_type, x.record_id))

    async def links_of_record(self, org_id: str, portal_id: str, record_type: str, record_id: str) -> list[Link]:
        """The record's linked projects, by project id."""
        key = (org_id, record_type, record_id)
        if key not in self.t.links_by_record:
            self._merge_links(await storage.load_links(self.conn, [], [key]), set(), {key})
        return sorted((x for x in self.t.links.values() if (x.org_id, x.record_type, x.record_id) == key
                       and x.portal_id == portal_id and x.linked), key=lambda x: x.project_id)

    async def put_link(self, row: Link) -> None:
        await self.links_of_project(row.org_id, row.portal_id, row.project_id)
        key = (row.org_id, row.project_id, row.record_type, row.record_id)
        if _newer(self.t.links.get(key), row.revision, "revision"):
            self.t.links[key] = row
            self._touch("links", key)

    async def name(self, org_id: str, kind: str, id_: str | None) -> DisplayName | None:
        if id_ is None:
            return None
        await self._load_names({(org_id, kind, id_)})
        return self.t.names[(org_id, kind, id_)]

    async def put_name(self, row: DisplayName) -> None:
        if _newer(await self.name(row.org_id, row.kind, row.id), row.version):
            self.t.names[(row.org_id, row.kind, row.id)] = row
            self._touch("names", (row.org_id, row.kind, row.id))

