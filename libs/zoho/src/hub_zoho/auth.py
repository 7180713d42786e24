"""One OAuth access token per org, refreshed by one caller at a time.

Zoho's access tokens live an hour, and a refresh token may mint at most ten of them in ten minutes: a
token per request, or every concurrent caller refreshing at once when it expires, locks the org out.
So every caller of an org shares one `TokenCache`; the first to find the token stale refreshes it under
a lock, the others wait on that lock and reuse what it got (single flight).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from hub_zoho.orgs import ZohoOrg


class AuthError(Exception):
    """The refresh grant was refused (revoked refresh token, wrong client): a person must act."""


class TokenCache:
    def __init__(self, org: ZohoOrg, http: httpx.AsyncClient, *, margin_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.org = org
        self.http = http
        self.margin = margin_seconds
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def token(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:
            if not self._fresh():  # someone else may have refreshed while we waited
                await self._refresh()
            return self._token  # type: ignore[return-value]

    def invalidate(self, token: str) -> None:
        """The API said `token` is invalid: drop it, unless a newer one already replaced it."""
        if self._token == token:
            self._expires_at = 0.0

    def _fresh(self) -> bool:
        return self._token is not None and self.clock() < self._expires_at - self.margin

    async def _refresh(self) -> None:
        resp = await self.http.post(f"{self.org.accounts_base}/oauth/v2/token", data={
            "grant_type": "refresh_token",
            "client_id": self.org.client_id,
            "client_secret": self.org.client_secret.get_secret_value(),
            "refresh_token": self.org.refresh_token.get_secret_value(),
        })
        body = resp.json() if resp.content else {}
        if resp.status_code != 200 or "access_token" not in body:
            # Zoho answers 200 with {"error": "invalid_code"} too; never echo the secrets we sent
            raise AuthError(f"refresh grant refused for org {self.org.org_id}: HTTP {resp.status_code} {body.get('error', '')}")
        self._token = str(body["access_token"])
        self._expires_at = self.clock() + float(body.get("expires_in", 3600))
        self.refreshes += 1
