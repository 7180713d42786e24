"""Entry point of the CRM connector: a hub_platform service whose handlers call Zoho CRM.

It stands where the sandbox's CRM half stands (consumes crm.commands, publishes crm.ingest), so it is
started instead of the sandbox for an org on a real Zoho, and has its own console script only.
"""

from __future__ import annotations

from typing import Any

from hub_crm_connector.handlers import make_router
from hub_crm_connector.ingress import Connector
from hub_crm_connector.settings import CrmConnectorSettings
from hub_platform.service import HubService
from hub_schema import topics
from hub_zoho.service import build_service, connector_migrations

MIGRATIONS = connector_migrations(__file__)


def build(settings: CrmConnectorSettings | None = None, connector: Connector | None = None) -> HubService:
    settings = settings or CrmConnectorSettings()
    connector = connector or Connector(settings)
    return build_service(settings, connector, make_router(connector), main_file=__file__, commands_topic=topics.CRM_COMMANDS,
                         ingest_topic=topics.CRM_INGEST, background=[connector.renewal_loop, connector.poll_loop],
                         title="hub CRM connector (Zoho CRM)")


def main(argv: Any = None) -> None:
    """`hub-crm-connector` serves; `hub-crm-connector backfill ...` pages an org's records in (see cli.py)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "backfill":
        from hub_crm_connector.cli import cli

        cli(args)
        return
    build().run()


if __name__ == "__main__":
    main()
