"""Settings of the linking service (env prefix HUB_, see hub_platform.settings).

HUB_LINKING_ADMIN_TOKEN guards the one HTTP endpoint that mints a service key
(S24): the key must reach its requester without ever travelling in an event or a
log, so it is returned once in that HTTP response. The local default is for
development only; deployments set it from a secret.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

LOCAL_ADMIN_TOKEN = "local-linking-admin-token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

from hub_platform.settings import ServiceSettings


class LinkingSettings(ServiceSettings):
    service_name: str = "linking"
    http_port: int = 8082
    admin_token: SecretStr = Field(
        SecretStr(LOCAL_ADMIN_TOKEN),
        validation_alias=AliasChoices("HUB_LINKING_ADMIN_TOKEN", "HUB_ADMIN_TOKEN"),
        description="Bearer token for POST /api/v1/orgs/{org_id}/service-key.",
    )

    @property
    def admin_token_is_public(self) -> bool:
        """The published local default, on an address other machines can reach."""
        return self.admin_token.get_secret_value() == LOCAL_ADMIN_TOKEN and self.http_host not in LOOPBACK
