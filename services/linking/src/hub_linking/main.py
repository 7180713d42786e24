"""Entry point of the linking service: its settings, handlers, topics, migrations and read API.

The API routes need the running service (pool, relay): `api=build_api` binds them to it.
"""

from __future__ import annotations


from hub_linking import handlers
from hub_linking.api import build_api
from hub_linking.settings import LinkingSettings
from hub_platform import db
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import topics
from hub_schema.events import commands as cmd
from hub_schema.events import linking
from hub_schema.events.notifications import NotificationReportPage, NotificationRequested

MIGRATIONS = db.service_migrations(__file__, "hub_linking")

EMITS = [
    linking.IntegrationChanged, linking.LinkChanged, linking.ResyncRequested, linking.LinkingRequestRefused,
    linking.AssociableProjectsListed, linking.ServiceKeyRotated, linking.SyncStopped, linking.MatchingPage,
    linking.MatchingCompleted, linking.ProjectAssociated, linking.ProjectCreationRequested,
    cmd.PmProjectCreate, cmd.PmProjectUpdate, cmd.PmProjectAddUsers, cmd.PmProjectAddClientUsers,
    cmd.PmClientUserCreate, NotificationReportPage, NotificationRequested,
]


def build(settings: ServiceSettings | None = None) -> HubService:
    settings = settings or LinkingSettings()
    if not isinstance(settings, LinkingSettings):
        settings = LinkingSettings(**settings.model_dump())
    service = HubService(
        settings, handlers.router,
        subscribe=[topics.CRM_INGEST, topics.PM_INGEST, topics.HUB_REQUESTS, topics.IDENTITY_EVENTS],
        migrations=MIGRATIONS, title="hub linking (record links, integration settings, Projects tab API)",
        emits=EMITS, tokens={"HUB_LINKING_ADMIN_TOKEN": settings.admin_token}, api=build_api,
    )
    return service


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
