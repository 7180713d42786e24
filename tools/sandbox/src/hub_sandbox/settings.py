"""Sandbox settings (env prefix HUB_, like every process of the hub; HUB_SANDBOX_* for its own).

`integration_user_id` is who the upstream tools record as the author of the
changes the hub's commands make (the connector's API user).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hub_platform.settings import ServiceSettings


class SandboxSettings(ServiceSettings):
    service_name: str = "sandbox"
    http_port: int = 8090
    sandbox_integration_user_id: str = Field(
        "integration", description="Upstream user id recorded on changes made by hub commands (HUB_SANDBOX_INTEGRATION_USER_ID).")
    sandbox_version_conflicts: Literal["reject", "apply"] = Field(
        "reject", description="A command whose base_version is behind the record: refuse it (version_conflict) or apply it "
                              "anyway, last writer wins (HUB_SANDBOX_VERSION_CONFLICTS).")
    sandbox_default_org_id: str = Field("org-1", description="Org used by the UI API when a call names none (HUB_SANDBOX_DEFAULT_ORG_ID).")
