"""Wires identity onto the platform: its router, the topics it reads, its migrations, a small read API.

The read API answers "which profile applied at time T" (S23) for admins and
operators; other services never call it, they follow identity.events.
"""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub_identity import domain, storage
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
    holder: dict[str, HubService] = {}

    async def profile_at(request: Request) -> Response:
        """GET /v1/orgs/{org_id}/permission-profile?at=<ISO 8601> — the profile that applied then (default now)."""
        at_raw = request.query_params.get("at")
        try:
            at = datetime.fromisoformat(at_raw) if at_raw else datetime.now(timezone.utc)
        except ValueError:
            return JSONResponse({"error": "at must be an ISO 8601 timestamp"}, status_code=400)
        if at.tzinfo is None:
            return JSONResponse({"error": "at needs a time zone"}, status_code=400)
        pool = holder["service"].pool
        assert pool is not None
        async with pool.acquire() as conn:
            history = await storage.profile_history(conn, request.path_params["org_id"])
        profile = domain.profile_at(history, at)
        return JSONResponse({"org_id": request.path_params["org_id"], "at": at.isoformat(),
                             "profile": profile.model_dump(mode="json"),
                             "history": [{"revision": h.revision, "effective_from": h.effective_from.isoformat(),
                                          "profile": h.profile.model_dump(mode="json")} for h in history]})

    service = HubService(
        settings or IdentitySettings(), router,
        subscribe=[topics.CRM_INGEST, topics.PM_INGEST, topics.HUB_REQUESTS, topics.LINKING_EVENTS],
        migrations=MIGRATIONS,
        routes=[Route("/v1/orgs/{org_id}/permission-profile", profile_at)],
        emits=EMITS, title="hub identity (users, customers, permissions)",
    )
    holder["service"] = service
    return service


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
