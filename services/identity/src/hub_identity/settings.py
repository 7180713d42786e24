"""Identity's settings: only the common ones plus its name and port (env prefix HUB_)."""

from __future__ import annotations

from hub_platform.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    http_port: int = 8081
