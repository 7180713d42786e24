"""CRM connector settings (HUB_ prefix like every process; HUB_CRM_CONNECTOR_* for its own).

What both connectors read (HUB_ZOHO_ORGS / HUB_ZOHO_ORGS_FILE, the schema) is hub_zoho.service's.
"""

from __future__ import annotations

from pydantic import Field

from hub_zoho.service import ZohoConnectorSettings

MODULES = ("Accounts", "Contacts", "Deals", "Leads", "Tasks", "Notes")


class CrmConnectorSettings(ZohoConnectorSettings):
    service_name: str = "crm-connector"
    """Its Kafka principal and consumer group (`hub_platform.kafka_acls`); the database schema is `crm_connector`."""
    http_port: int = 8091
    crm_connector_public_url: str = Field(
        "http://127.0.0.1:8091", description="Where Zoho reaches this connector; notifications go to {url}/zoho/crm/notify/{org_id}.")
    crm_connector_modules: list[str] = Field(list(MODULES), description="CRM modules watched, polled and backfilled.")
    crm_connector_channel_ttl_seconds: float = Field(
        24 * 3600.0, gt=0, description="Lifetime asked for each notification channel (Zoho: 1 h default, at most a week from v4).")
    crm_connector_renew_before_seconds: float = Field(
        3600.0, gt=0, description="A channel is renewed when less than this is left of it.")
    crm_connector_renew_check_seconds: float = Field(60.0, gt=0, description="How often channels are checked.")
    crm_connector_poll_seconds: float = Field(
        300.0, gt=0, description="Reconciliation poll: a missed notification is caught within this interval.")
    crm_connector_poll_overlap_seconds: float = Field(
        2.0, ge=0, description="The poll re-reads this much before its cursor (Zoho's times have second resolution).")

