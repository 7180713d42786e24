"""PM connector settings (HUB_ prefix; HUB_PM_CONNECTOR_* for its own). What both connectors read
(HUB_ZOHO_ORGS / HUB_ZOHO_ORGS_FILE, the schema) is hub_zoho.service's."""

from __future__ import annotations

from pydantic import Field

from hub_zoho.service import ZohoConnectorSettings

KINDS = ("users", "clients", "projectgroups", "projects", "tasks", "comments")
"""Polled in this order (what a record refers to comes first); `users` lists portal and client users."""
SWEPT = ("users", "clients", "projectgroups", "projects", "tasks")
"""The kinds whose deletions the hub hears of (comments are never deleted in its model)."""


class PmConnectorSettings(ZohoConnectorSettings):
    service_name: str = "pm-connector"
    """Its Kafka principal and consumer group (`hub_platform.kafka_acls`); the database schema is `pm_connector`."""
    http_port: int = 8092
    pm_connector_poll_seconds: float = Field(
        60.0, gt=0, description="Projects has no change notifications for apps: every portal is polled this often.")
    pm_connector_sweep_seconds: float = Field(
        900.0, gt=0, description="How often the poll also lists every id to find deleted records (Projects lists none).")
    pm_connector_poll_overlap_seconds: float = Field(2.0, ge=0, description="The poll re-reads this much before its cursor.")

