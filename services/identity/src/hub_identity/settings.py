"""Identity's settings: the common ones plus its name, port and operator token (env prefix HUB_)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from hub_platform.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    http_port: int = 8081
    operator_token: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("HUB_OPERATOR_TOKEN", "HUB_IDENTITY_OPERATOR_TOKEN"),
        description="Bearer token of the operators: the permission-profile API (unset: the API is closed).",
    )
