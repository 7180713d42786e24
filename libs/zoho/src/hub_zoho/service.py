"""What both connectors share as hub services: their settings, their tables (one migrations folder,
`hub_zoho/migrations`), the `ZohoConnector` base (the orgs, one ZohoApi per org, the outbox) and the
service they run as. Each connector adds its own side: notifications and channels (CRM), the poll and
the sweep (Projects), and its command handlers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
from pydantic import Field, SecretStr

from hub_platform.emit import Emitter
from hub_platform.http import HubApi
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import Payload
from hub_schema.registry import all_events
from hub_schema.topics import TopicNames
from hub_zoho.api import ZohoApi
from hub_zoho.orgs import ZohoOrg, load_orgs

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""record_state, applied_commands, cursors, channels: the same tables in each connector's own schema."""

Emit = Callable[[Payload, str, uuid.UUID], Awaitable[Any]]


def connector_migrations(main_file: str) -> list[Path]:
    """The shared folder, then the connector's own `migrations/` (installed or in the source tree) if it holds SQL."""
    here = Path(main_file).resolve().parent
    own = [p for p in (here / "migrations", here.parents[1] / "migrations") if p.is_dir() and any(p.glob("*.sql"))]
    return [MIGRATIONS, *own[:1]]


class ZohoConnectorSettings(ServiceSettings):
    """Settings both connectors read (HUB_ prefix). Credentials are not settings: they come per org from
    `HUB_ZOHO_ORGS` (JSON) or the secrets file `HUB_ZOHO_ORGS_FILE` names (hub_zoho.orgs), never logged."""

    zoho_orgs: SecretStr | None = Field(None, description="The orgs' Zoho credentials as JSON (HUB_ZOHO_ORGS; see hub_zoho.orgs).")
    zoho_orgs_file: str | None = Field(None, description="JSON secrets file of the orgs (HUB_ZOHO_ORGS_FILE).")

    @property
    def schema(self) -> str:
        """The service name without its hyphen (`crm_connector`); `HUB_DB__SCHEMA_NAME` still wins."""
        return self.db.schema_name or self.service_name.replace("-", "_")


class ZohoConnector:
    """A connector's state: the orgs, one ZohoApi (token cache, limiter) per org, and once started the service."""

    origin: ClassVar[str]  # "crm" or "pm": the side its events come from

    def __init__(self, settings: ZohoConnectorSettings, orgs: dict[str, ZohoOrg] | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.orgs = orgs if orgs is not None else load_orgs(
            settings.zoho_orgs_file, settings.zoho_orgs.get_secret_value() if settings.zoho_orgs else "")
        self.apis = {org_id: ZohoApi(org, http) for org_id, org in self.orgs.items()}
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.service: Any = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.service is not None and self.service.pool is not None, "start the connector first"
        return self.service.pool

    def outbox_emitter(self, conn: asyncpg.Connection, org_id: str) -> Emit:
        """Publishing outside a handler (notifications, polls, backfill): into the outbox in `conn`'s transaction."""
        out = Emitter(conn, producer=self.settings.service_name, topics=self.topics, origin=self.origin)  # type: ignore[arg-type]

        async def emit(payload: Payload, entity_key: str, event_id: uuid.UUID) -> None:
            await out.emit(payload, org_id=org_id, entity_key=entity_key, event_id=event_id)
        return emit

    def api(self, service: Any = None) -> HubApi:
        """The connector's HTTP endpoints (attached the one way: HubService(api=...)); none by default."""
        return HubApi()

    async def aclose(self) -> None:
        for api in self.apis.values():
            await api.aclose()


def build_service(settings: ZohoConnectorSettings, connector: ZohoConnector, router: Any, *, main_file: str,
                  commands_topic: str, ingest_topic: str, background: Sequence[Callable[[HubService], Awaitable[None]]],
                  title: str) -> HubService:
    """The connector as a hub service: consumes its commands topic, publishes its ingest topic, runs its jobs."""
    service = HubService(
        settings, router,
        subscribe=[commands_topic],
        migrations=connector_migrations(main_file),
        api=connector.api,
        background=background,
        emits=[m for m in all_events().values() if m.TOPIC == ingest_topic],
        title=title,
    )
    connector.service = service
    service.connector = connector  # type: ignore[attr-defined]
    return service
