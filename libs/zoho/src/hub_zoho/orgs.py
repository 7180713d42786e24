"""Which Zoho an org talks to: its data centre and OAuth client, loaded from a secrets file or the environment.

The secrets file (or the `HUB_ZOHO_ORGS` variable) is a JSON object keyed by the hub's org id:

    {"org-1": {"data_centre": "eu", "client_id": "1000.X", "client_secret": "...", "refresh_token": "1000.y...",
               "portal_ids": ["12345"], "notify_token": "a-secret-of-at-most-50-chars"}}

`*_url` overrides point an org at a fake (tools/fakezoho) or a proxy. Secrets are `SecretStr`: they print
as `**********` in logs and reprs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DataCentre = Literal["com", "eu", "in", "com.au", "jp", "com.cn", "ca", "sa"]

# accounts host, API host (CRM), Projects API host per data centre (Zoho's multi-DC documentation)
HOSTS: dict[str, tuple[str, str, str]] = {
    "com": ("https://accounts.zoho.com", "https://www.zohoapis.com", "https://projectsapi.zoho.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu", "https://projectsapi.zoho.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in", "https://projectsapi.zoho.in"),
    "com.au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au", "https://projectsapi.zoho.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp", "https://projectsapi.zoho.jp"),
    "com.cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn", "https://projectsapi.zoho.com.cn"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca", "https://projectsapi.zohocloud.ca"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa", "https://projectsapi.zoho.sa"),
}


class ZohoOrg(BaseModel):
    """One CRM org (the hub's tenant) and the Zoho it lives in."""

    model_config = ConfigDict(extra="forbid")

    org_id: str = ""
    data_centre: DataCentre = "com"
    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    crm_api_version: str = "v7"
    portal_ids: list[str] = Field(default_factory=list)
    notify_token: SecretStr | None = Field(None, description="Sent with each watch channel; Zoho echoes it (<= 50 chars).")
    webhook_secret: SecretStr | None = Field(None, description="Shared secret of the optional Projects workflow webhook.")
    concurrency: int = Field(5, ge=1, description="Concurrent API calls (Zoho's cap by edition: Free 5 ... Enterprise 20).")
    daily_credits: int | None = Field(None, ge=1, description="Stop before Zoho does: calls per day this org may spend.")
    accounts_url: str | None = None
    api_url: str | None = None
    projects_url: str | None = None

    @property
    def accounts_base(self) -> str:
        return (self.accounts_url or HOSTS[self.data_centre][0]).rstrip("/")

    @property
    def crm_base(self) -> str:
        return (self.api_url or HOSTS[self.data_centre][1]).rstrip("/")

    @property
    def projects_base(self) -> str:
        return (self.projects_url or HOSTS[self.data_centre][2]).rstrip("/")


def load_orgs(path: str | Path | None = None, env_value: str | None = None) -> dict[str, ZohoOrg]:
    """The orgs from a secrets file (JSON) and/or `HUB_ZOHO_ORGS` (JSON); the file wins for an org in both."""
    raw: dict[str, dict[str, object]] = {}
    env_value = env_value if env_value is not None else os.environ.get("HUB_ZOHO_ORGS")
    if env_value:
        raw.update(json.loads(env_value))
    if path:
        raw.update(json.loads(Path(path).read_text()))
    return {org_id: ZohoOrg.model_validate({**fields, "org_id": org_id}) for org_id, fields in raw.items()}
