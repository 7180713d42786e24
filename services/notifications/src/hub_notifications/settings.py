"""Settings of the notification service: SMTP server, delivery policy, templates.

Environment: HUB_SMTP__HOST / PORT / STARTTLS / USE_TLS / USERNAME / PASSWORD /
FROM_ADDRESS / TIMEOUT / VALIDATE_CERTS / CAFILE, and HUB_DELIVERY__* for the
retry policy. The local default is the project's SMTP sink on 127.0.0.1:1025
without TLS; production sets STARTTLS (587) or USE_TLS (465) and credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator

from hub_platform.settings import ServiceSettings


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS (port 587).")
    use_tls: bool = Field(False, description="Implicit TLS from the first byte (port 465).")
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "SyncHub <no-reply@hub.synchub.local>"
    timeout: float = Field(30.0, gt=0, description="Seconds for each SMTP operation.")
    validate_certs: bool = True
    cafile: str | None = None

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpSettings:
        if self.starttls and self.use_tls:
            raise ValueError("choose STARTTLS or USE_TLS, not both")
        return self


class DeliverySettings(BaseModel):
    """When to try again and when to give up (see hub_notifications.sender)."""

    max_attempts: int = Field(8, ge=1, description="SMTP refusals (4xx) of one mail before it is marked failed.")
    quick_retries: int = Field(3, ge=1, description="Tries in a row (exponential backoff + jitter) per claim.")
    quick_retry_initial: float = Field(0.2, ge=0)
    quick_retry_max: float = Field(2.0, ge=0)
    retry_base_seconds: float = Field(30.0, ge=0, description="Delay before the next claim after a refusal, doubled each time.")
    retry_max_seconds: float = Field(1800.0, ge=0)
    outage_base_seconds: float = Field(2.0, ge=0, description="Pause after the server could not be reached, doubled while it lasts.")
    outage_max_seconds: float = Field(60.0, ge=0)
    lease_seconds: float = Field(300.0, gt=0, description="A claimed mail not marked within this is claimed again (crash).")
    workers: int = Field(2, ge=1)
    poll_seconds: float = Field(1.0, gt=0)


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    http_port: int = 8084
    smtp: SmtpSettings = SmtpSettings()
    delivery: DeliverySettings = DeliverySettings()
    default_locale: Literal["ja", "en"] = "ja"
    message_id_domain: str = "hub.synchub.local"
    templates_dir: Path | None = Field(None, description="Replaces the packaged templates (same layout: <locale>/<kind>.*.j2).")
    operator_token: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("HUB_OPERATOR_TOKEN", "HUB_NOTIFICATIONS_OPERATOR_TOKEN"),
        description="Bearer token of the operators: delivery log, retry, any org's preferences (at least 32 bytes).",
    )
