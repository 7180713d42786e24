"""Identity's read API: which permission profile applied to an org at a time T (S23).

For operators (`HUB_OPERATOR_TOKEN`); other services never call it, they follow identity.events.
Without a configured token the endpoint is closed (it answers 401 to everyone).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AwareDatetime, Field

from hub_identity import domain, storage
from hub_platform.http import HubApi, Input, Path, Query, TokenAuth

if TYPE_CHECKING:
    from hub_platform.service import HubService


class ProfileQuery(Input):
    at: AwareDatetime | None = Field(None, description="ISO 8601 with a time zone; now when absent")


def build_api(service: HubService) -> HubApi:
    api = HubApi()
    operator = TokenAuth(lambda: service.settings.operator_token, "operator", "HUB_OPERATOR_TOKEN")  # type: ignore[attr-defined]

    @api.get("/v1/orgs/{org_id}/permission-profile", auth=operator,
             summary="the permission profile that applied at `at` (default now), and its history (S23)")
    async def profile_at(org_id: Annotated[str, Path(min_length=1, max_length=80)],
                         query: Annotated[ProfileQuery, Query()]) -> dict[str, Any]:
        at = query.at or datetime.now(timezone.utc)
        async with service.pool.acquire() as conn:  # type: ignore[union-attr]
            history = await storage.profile_history(conn, org_id)
        profile = domain.profile_at(history, at)
        return {"org_id": org_id, "at": at.isoformat(), "profile": profile.model_dump(mode="json"),
                "history": [{"revision": h.revision, "effective_from": h.effective_from.isoformat(),
                             "profile": h.profile.model_dump(mode="json")} for h in history]}

    return api
