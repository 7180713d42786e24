"""Wires the sandbox onto the platform: it consumes the hub's commands and serves the UI API.

Built on HubService like the hub's services (same inbox/outbox, relay, health
and metrics), but it is not one of them: it stands where the CRM and PM
connectors would, so it has its own console script `hub-sandbox` and no
"hub.services" entry point.
"""

from __future__ import annotations

from pathlib import Path

from hub_platform.service import HubService
from hub_schema import topics
from hub_schema.registry import all_events
from hub_sandbox.api import build_api
from hub_sandbox.handlers import make_router
from hub_sandbox.settings import SandboxSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def emitted_events() -> list[type]:
    """Every event the sandbox publishes: the upstream change events and the requests of the CRM UI."""
    wanted = (topics.CRM_INGEST, topics.PM_INGEST, topics.HUB_REQUESTS)
    return [m for m in all_events().values() if m.TOPIC in wanted]


def build(settings: SandboxSettings | None = None) -> HubService:
    settings = settings or SandboxSettings()
    service = HubService(
        settings, make_router(settings),
        subscribe=[topics.CRM_COMMANDS, topics.PM_COMMANDS],
        migrations=MIGRATIONS,
        api=build_api,
        emits=emitted_events(),
        title="hub sandbox (a CRM and a PM tool for demos and tests)",
    )
    return service


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
