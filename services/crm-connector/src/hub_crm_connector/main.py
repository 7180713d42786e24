"""Entry point of the CRM connector: a hub_platform service whose handlers call Zoho CRM.

It stands where the sandbox's CRM half stands (consumes crm.commands, publishes crm.ingest), so it is
started instead of the sandbox for an org on a real Zoho, and has its own console script only.
"""

from __future__ import annotations

from typing import Any

from hub_crm_connector.handlers import make_router
from hub_crm_connector.ingress import Connector
from hub_crm_connector.settings import CrmConnectorSettings
from hub_platform import db
from hub_platform.service import HubService
from hub_schema import topics
from hub_schema.registry import all_events

MIGRATIONS = db.service_migrations(__file__, "hub_crm_connector")


def build(settings: CrmConnectorSettings | None = None, connector: Connector | None = None) -> HubService:
    settings = settings or CrmConnectorSettings()
    connector = connector or Connector(settings)
    service = HubService(
        settings, make_router(connector),
        subscribe=[topics.CRM_COMMANDS],
        migrations=MIGRATIONS,
        api=connector.api,
        background=[connector.renewal_loop, connector.poll_loop],
        emits=[m for m in all_events().values() if m.TOPIC == topics.CRM_INGEST],
        title="hub CRM connector (Zoho CRM)",
    )
    connector.service = service
    service.connector = connector  # type: ignore[attr-defined]
    return service


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
