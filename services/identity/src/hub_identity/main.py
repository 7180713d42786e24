"""Wires identity onto the platform: its router, the topics it reads, its migrations, a small read API.

The read API (hub_identity.api) answers "which profile applied at time T" (S23) for
operators; other services never call it, they follow identity.events.
"""

from __future__ import annotations

from hub_identity.api import build_api
from hub_identity.handlers import router
from hub_identity.settings import IdentitySettings
from hub_platform import db
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import topics
from hub_schema.events import commands as cmd
from hub_schema.events import identity
from hub_schema.events.notifications import NotificationRequested

MIGRATIONS = db.service_migrations(__file__, "hub_identity")

EMITS = [
    identity.UserAccessChanged, identity.PermissionProfileChanged, identity.CustomerMappingChanged,
    identity.ImportCompleted, identity.IdentityRequestRefused, NotificationRequested,
    cmd.PmClientCompanyCreate, cmd.PmClientCompanyUpdate, cmd.PmClientUserCreate, cmd.PmClientUserUpdate,
    cmd.PmPortalUserInvite, cmd.PmPortalUserDeactivate,
]


def build(settings: ServiceSettings | None = None) -> HubService:
    settings = settings or IdentitySettings()
    if not isinstance(settings, IdentitySettings):  # generic settings (contract export): add our defaults
        settings = IdentitySettings.model_validate(settings.model_dump())
    token = settings.operator_token
    return HubService(
        settings, router,
        subscribe=[topics.CRM_INGEST, topics.PM_INGEST, topics.HUB_REQUESTS, topics.LINKING_EVENTS],
        migrations=MIGRATIONS,
        api=build_api,
        emits=EMITS, title="hub identity (users, customers, permissions)",
        # an unset token closes the endpoint; a set one must be strong off loopback
        tokens={"HUB_OPERATOR_TOKEN": token} if token.get_secret_value() else {},
    )


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
