"""Entry point of the PM connector: a hub_platform service whose handlers call Zoho Projects.

It stands where the sandbox's PM half stands (consumes pm.commands, publishes pm.ingest); its own console
script only, like the sandbox.
"""

from __future__ import annotations

from hub_platform import db
from hub_platform.service import HubService
from hub_pm_connector.handlers import make_router
from hub_pm_connector.ingress import Connector
from hub_pm_connector.settings import PmConnectorSettings
from hub_schema import topics
from hub_schema.registry import all_events

MIGRATIONS = db.service_migrations(__file__, "hub_pm_connector")


def build(settings: PmConnectorSettings | None = None, connector: Connector | None = None) -> HubService:
    settings = settings or PmConnectorSettings()
    connector = connector or Connector(settings)
    service = HubService(
        settings, make_router(connector),
        subscribe=[topics.PM_COMMANDS],
        migrations=MIGRATIONS,
        api=connector.api,
        background=[connector.poll_loop],
        emits=[m for m in all_events().values() if m.TOPIC == topics.PM_INGEST],
        title="hub PM connector (Zoho Projects)",
    )
    connector.service = service
    service.connector = connector  # type: ignore[attr-defined]
    return service


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
