"""Entry point of the PM connector: a hub_platform service whose handlers call Zoho Projects.

It stands where the sandbox's PM half stands (consumes pm.commands, publishes pm.ingest); its own console
script only, like the sandbox.
"""

from __future__ import annotations

from hub_platform.service import HubService
from hub_pm_connector.handlers import make_router
from hub_pm_connector.ingress import Connector
from hub_pm_connector.settings import PmConnectorSettings
from hub_schema import topics
from hub_zoho.service import build_service, connector_migrations

MIGRATIONS = connector_migrations(__file__)


def build(settings: PmConnectorSettings | None = None, connector: Connector | None = None) -> HubService:
    settings = settings or PmConnectorSettings()
    connector = connector or Connector(settings)
    return build_service(settings, connector, make_router(connector), main_file=__file__, commands_topic=topics.PM_COMMANDS,
                         ingest_topic=topics.PM_INGEST, background=[connector.poll_loop], title="hub PM connector (Zoho Projects)")


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
