"""Settings of the linking service (env prefix HUB_, see hub_platform.settings).

HUB_LINKING_ADMIN_TOKEN guards the one HTTP endpoint that mints a service key
(S24): the key must reach its requester without ever travelling in an event or a
log, so it is returned once in that HTTP response. There is no default: unset,
the endpoint accepts no one, and a service listening beyond loopback refuses to
start with an empty, short or published token (hub_platform.http). `make up`
generates one into the state folder; deployments set it from a secret.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from hub_platform.settings import ServiceSettings


class LinkingSettings(ServiceSettings):
    service_name: str = "linking"
    http_port: int = 8082
    admin_token: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("HUB_LINKING_ADMIN_TOKEN", "HUB_ADMIN_TOKEN"),
        description="Bearer token for POST /api/v1/orgs/{org_id}/service-key (at least 32 bytes, from a secret).",
    )
