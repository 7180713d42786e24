"""Authorised calls to Zoho with the org's limits: concurrency cap, daily credits, 429 back-off, one refresh on 401.

A call that Zoho throttles (HTTP 429, `TOO_MANY_REQUESTS`) is never dropped: the caller waits
`Retry-After` (or an exponential, jittered back-off when Zoho gives none) and tries again until it
goes through. Server errors and connection failures are retried a few times, then raised, so the
consumer's own retry (and, at last, its dead letter) takes over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_never, wait_exponential_jitter

from hub_zoho.auth import TokenCache
from hub_zoho.orgs import ZohoOrg

log = structlog.get_logger(__name__)


class ZohoError(Exception):
    """Zoho refused the call (4xx other than 401/429): the request itself is wrong or not allowed."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class RateLimited(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"throttled, retry after {retry_after}")
        self.retry_after = retry_after


class Transient(Exception):
    """5xx or a connection failure: worth a few more tries."""


@dataclass
class ItemResult:
    """One record's outcome in a multi-record write (HTTP 201/200/207/400 with a `data` list)."""

    ok: bool
    id: str | None
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class DailyCredits:
    """A local count of the org's calls today, so the connector stops before Zoho's daily limit does."""

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.time) -> None:
        self.limit, self.clock = limit, clock
        self.day = self._today()
        self.used = 0

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def seconds_until_tomorrow(self) -> float:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
        return (tomorrow - now).total_seconds()

    async def spend(self) -> None:
        while True:
            if self._today() != self.day:
                self.day, self.used = self._today(), 0
            if self.limit is None or self.used < self.limit:
                self.used += 1
                return
            wait = self.seconds_until_tomorrow()
            log.warning("daily API credits spent, waiting for the next day", limit=self.limit, wait_seconds=round(wait))
            await asyncio.sleep(min(wait, 300))


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        reset = resp.headers.get("X-RATELIMIT-RESET")  # epoch ms on Zoho's CRM
        if reset and reset.isdigit():
            return max(int(reset) / 1000 - time.time(), 0.0)
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


class _WaitRetryAfter:
    """tenacity wait: Zoho's Retry-After when it gave one, else exponential with jitter (at most a minute)."""

    def __init__(self) -> None:
        self.fallback = wait_exponential_jitter(multiplier=0.2, max=60, jitter=0.5)

    def __call__(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, 300.0)
        return self.fallback(state)


class ZohoApi:
    """Every call an org makes goes through here; one instance per org (it owns the org's token cache)."""

    def __init__(self, org: ZohoOrg, http: httpx.AsyncClient | None = None, *, transient_attempts: int = 4) -> None:
        self.org = org
        self.http = http or httpx.AsyncClient(timeout=30.0)
        self.tokens = TokenCache(org, self.http)
        self.slots = asyncio.Semaphore(org.concurrency)
        self.credits = DailyCredits(org.daily_credits)
        self.transient_attempts = transient_attempts
        self.throttled = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, url: str, *, params: dict[str, Any] | None = None, json: Any = None,
                      headers: dict[str, str] | None = None) -> httpx.Response:
        """Returns the response for 2xx (207 included) and 204; raises ZohoError for a refused call."""
        throttled = AsyncRetrying(retry=retry_if_exception_type(RateLimited), wait=_WaitRetryAfter(), stop=stop_never, reraise=True)
        async for attempt in throttled:
            with attempt:
                transient = AsyncRetrying(retry=retry_if_exception_type(Transient), wait=wait_exponential_jitter(multiplier=0.2, max=10, jitter=0.5),
                                          stop=stop_after_attempt(self.transient_attempts), reraise=True)
                async for t in transient:
                    with t:
                        return await self._once(method, url, params=params, json=json, headers=headers)
        raise AssertionError("unreachable")

    async def _once(self, method: str, url: str, *, params: dict[str, Any] | None, json: Any,
                    headers: dict[str, str] | None) -> httpx.Response:
        await self.credits.spend()
        async with self.slots:
            for _ in range(2):  # a second try only after one refresh on 401
                token = await self.tokens.token()
                try:
                    resp = await self.http.request(method, url, params=params, json=json,
                                                   headers={**(headers or {}), "Authorization": f"Zoho-oauthtoken {token}"})
                except httpx.TransportError as exc:
                    raise Transient(repr(exc)) from exc
                if resp.status_code == 401:
                    self.tokens.invalidate(token)
                    continue
                break
        if resp.status_code == 429 or _code(resp) == "TOO_MANY_REQUESTS":
            self.throttled += 1
            wait = _retry_after(resp)
            log.info("zoho throttled the org, backing off", org_id=self.org.org_id, retry_after=wait)
            raise RateLimited(wait)
        if resp.status_code >= 500:
            raise Transient(f"HTTP {resp.status_code}")
        if resp.status_code >= 400 and not _has_items(resp):
            body = _json(resp)
            projects_error = body.get("error") if isinstance(body.get("error"), dict) else {}  # Projects: {"error": {"title"}}
            raise ZohoError(resp.status_code, str(body.get("code", "ERROR")),
                            str(body.get("message") or projects_error.get("title") or resp.text[:300]),
                            body.get("details") or projects_error.get("details"))
        return resp


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _code(resp: httpx.Response) -> str | None:
    if resp.status_code < 400:
        return None
    return str(_json(resp).get("code")) if _json(resp).get("code") else None


def _has_items(resp: httpx.Response) -> bool:
    """A 400 for a multi-record write carries per-record results: hand them back rather than raising."""
    body = _json(resp)
    return resp.status_code == 400 and isinstance(body.get("data"), list)


def item_results(resp: httpx.Response, key: str = "data") -> list[ItemResult]:
    """The per-record outcomes of a multi-record write, in request order (201, 200, 207 or 400)."""
    out = []
    for item in _json(resp).get(key, []):
        details = item.get("details") or {}
        ok = str(item.get("status", "")).lower() == "success"
        out.append(ItemResult(ok, str(details["id"]) if ok and "id" in details else None, str(item.get("code", "")),
                              str(item.get("message", "")), details))
    return out
