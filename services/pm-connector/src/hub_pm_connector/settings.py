"""PM connector settings (HUB_ prefix; HUB_PM_CONNECTOR_* for its own). Credentials per org come from
`HUB_ZOHO_ORGS` or the file named by HUB_PM_CONNECTOR_ORGS_FILE (hub_zoho.orgs), never from here."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hub_platform.settings import ServiceSettings

KINDS = ("users", "clients", "projectgroups", "projects", "tasks", "comments")
"""Polled in this order (what a record refers to comes first); `users` lists portal and client users."""
SWEPT = ("users", "clients", "projectgroups", "projects", "tasks")
"""The kinds whose deletions the hub hears of (comments are never deleted in its model)."""


class PmConnectorSettings(ServiceSettings):
    service_name: str = "pm-connector"
    """Its Kafka principal and consumer group (`hub_platform.kafka_acls`); the database schema is `pm_connector`."""
    http_port: int = 8092
    zoho_orgs: SecretStr | None = Field(None, description="The orgs' Zoho credentials as JSON (HUB_ZOHO_ORGS; see hub_zoho.orgs).")
    pm_connector_orgs_file: str | None = Field(None, description="JSON secrets file of the orgs (HUB_PM_CONNECTOR_ORGS_FILE).")
    pm_connector_poll_seconds: float = Field(
        60.0, gt=0, description="Projects has no change notifications for apps: every portal is polled this often.")
    pm_connector_sweep_seconds: float = Field(
        900.0, gt=0, description="How often the poll also lists every id to find deleted records (Projects lists none).")
    pm_connector_poll_overlap_seconds: float = Field(2.0, ge=0, description="The poll re-reads this much before its cursor.")

    @property
    def schema(self) -> str:
        """A PostgreSQL schema name without the hyphen of the service name (`HUB_DB__SCHEMA_NAME` still wins)."""
        return self.db.schema_name or "pm_connector"
