"""Zoho CRM -> crm.ingest: notifications, the reconciliation poll, channel renewal, backfill.

Every path ends in `observe`: under a per-record lock it compares what the hub would see of the record
with what was last published, numbers a new version if it changed, and writes the event to the outbox
with an id derived from (org, module, record, version). A notification repeated, a poll that re-reads
the record, a backfill and the echo of a command therefore publish the same event, and the hub's inboxes
absorb the copies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
import httpx
from pydantic import SecretStr
from starlette.requests import Request
from starlette.routing import BaseRoute

from hub_crm_connector import domain, storage
from hub_crm_connector.settings import CrmConnectorSettings
from hub_platform import metrics
from hub_platform.http import Body, HttpError, HubApi, UpstreamSecretAuth
from hub_platform.logs import get_logger
from hub_schema import Payload
from hub_zoho.api import ZohoError
from hub_zoho.crm import CrmClient
from hub_zoho import state
from hub_zoho.orgs import ZohoOrg
from hub_zoho.service import Emit, ZohoConnector

log = get_logger(__name__)

REFUSED_NOTIFICATIONS = metrics.Counter(
    "hub_connector_notifications_refused_total", "Notifications refused because their token was wrong (treated as attacks)",
    ["connector"], registry=metrics.REGISTRY)


def channel_id_of(org_id: str) -> int:
    """A stable channel id per org (Zoho wants a long; it must be unique within the org's Zoho)."""
    return uuid.uuid5(state.EVENT_NAMESPACE, f"channel/{org_id}").int % (2**53 - 1) + 1


class Connector(ZohoConnector):
    """The CRM connector's state: the orgs, one ZohoApi (token cache, limiter) and CrmClient per org, the service."""

    origin = "crm"

    def __init__(self, settings: CrmConnectorSettings, orgs: dict[str, ZohoOrg] | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(settings, orgs, http)
        self.settings: CrmConnectorSettings = settings
        self.crm = {org_id: CrmClient(api) for org_id, api in self.apis.items()}

    # -- the one path every change takes ------------------------------------------------------------

    async def observe(self, conn: asyncpg.Connection, org_id: str, module: str, record_id: str, rec: dict[str, Any] | None,
                      emit: Emit, command_id: uuid.UUID | None = None) -> Payload | None:
        kind = domain.KINDS[module]
        if rec is None:
            if kind.deleted is None:
                return None  # nothing to say (a note stays)
            fields = None
        else:
            try:
                fields = domain.record_fields(module, rec)
                domain.upsert_payload(module, fields, modified_at=domain.zoho_time(rec.get("Modified_Time")), version=0,
                                      acting_user_id=None, command_id=None)  # fits the schema before it gets a version
            except domain.NotPublished as exc:
                log.info("zoho record not published", org_id=org_id, module=module, record_id=record_id, why=str(exc))
                return None
        got = await storage.version_of(conn, org_id, module, record_id, fields, command_id,
                                       created_by=state.command_marker((rec or {}).get("Hub_Command_Id")))
        if got is None:
            return None  # a deletion of a record never published
        version, cid = got
        if fields is None:
            payload = domain.delete_payload(module, record_id, version=version, command_id=cid)
        else:
            payload = domain.upsert_payload(module, fields, modified_at=domain.zoho_time(rec.get("Modified_Time")),  # type: ignore[union-attr]
                                            version=version, acting_user_id=domain._id(rec.get("Modified_By")),  # type: ignore[union-attr]
                                            command_id=cid)
        if payload is not None:
            await emit(payload, kind.entity_key(record_id), state.event_id(org_id, module, record_id, version))
        return payload

    async def ingest(self, org_id: str, module: str, ids: Sequence[str], *, deleted: bool = False,
                     records: Sequence[dict[str, Any]] | None = None) -> int:
        """Fetch the records by id (unless given) and publish what changed; ids Zoho no longer has are deletions."""
        if records is None:
            records = [] if deleted else await self.crm[org_id].get_records(module, ids)
        by_id = {str(r["id"]): r for r in records}
        published = 0
        async with self.pool.acquire() as conn, conn.transaction():
            emit = self.outbox_emitter(conn, org_id)
            for record_id in dict.fromkeys([*ids, *by_id]):
                if await self.observe(conn, org_id, module, str(record_id), by_id.get(str(record_id)), emit) is not None:
                    published += 1
        self.service.relay.wake()
        return published

    # -- notifications ------------------------------------------------------------------------------

    def notify_url(self, org_id: str) -> str:
        return f"{self.settings.crm_connector_public_url.rstrip('/')}/zoho/crm/notify/{org_id}"

    async def _notify_token(self, request: Request) -> str | None:
        """The channel token Zoho echoes in the notification's body (its only credential)."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise HttpError(404, "not_found", "unknown org or not a notification")
        return str(body.get("token") or "")

    def _notify_secret(self, org_id: str) -> SecretStr | None:
        org = self.orgs.get(org_id)
        if org is None:
            raise HttpError(404, "not_found", "unknown org or not a notification")
        return org.notify_token

    def _notification_refused(self, request: Request) -> None:
        REFUSED_NOTIFICATIONS.labels(self.settings.service_name).inc()
        log.warning("zoho notification with a wrong token refused (possible forgery)", org_id=request.path_params["org_id"],
                    client=request.client.host if request.client else None)

    def api(self, service: Any = None) -> HubApi:
        """The notification endpoint; `service` is unused (HubService(api=...) passes it)."""
        api = HubApi()
        channel_token = UpstreamSecretAuth(
            "zohoChannelToken", "Zoho channel token (the notification body's `token`)",
            secret_of=self._notify_secret, presented=self._notify_token, on_refused=self._notification_refused)

        @api.post("/zoho/crm/notify/{org_id}", auth=channel_token, summary="Zoho CRM's change notifications")
        async def on_notification(org_id: str, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
            module, ids = body.get("module"), [str(i) for i in body.get("ids") or []]
            if module not in self.settings.crm_connector_modules or module not in domain.KINDS:
                return {"ignored": module}
            published = await self.ingest(org_id, module, ids, deleted=body.get("operation") == "delete")
            return {"published": published}

        return api

    def routes(self) -> list[BaseRoute]:
        return self.api().routes

    # -- channels -----------------------------------------------------------------------------------

    async def renew_channels(self, now: datetime | None = None) -> list[str]:
        """Enable or renew each org's channel that is missing or lapses within `renew_before`; returns the orgs renewed."""
        s = self.settings
        now = now or datetime.now(UTC)
        renewed = []
        for org_id, org in self.orgs.items():
            ch = await storage.channel(self.pool, org_id)
            if ch is not None and ch["expires_at"] - now > timedelta(seconds=s.crm_connector_renew_before_seconds):
                continue
            channel_id = ch["channel_id"] if ch else channel_id_of(org_id)
            events = [f"{m}.all" for m in s.crm_connector_modules]
            expiry = now + timedelta(seconds=s.crm_connector_channel_ttl_seconds)
            token = org.notify_token.get_secret_value() if org.notify_token else None
            await self.crm[org_id].watch(channel_id, events, self.notify_url(org_id), token, expiry)
            await storage.save_channel(self.pool, org_id, channel_id, events, expiry)
            log.info("zoho notification channel renewed", org_id=org_id, channel_id=channel_id, expires_at=expiry.isoformat())
            renewed.append(org_id)
        return renewed

    # -- reconciliation poll ------------------------------------------------------------------------

    async def poll(self, org_id: str) -> int:
        """Publish what changed since the stored cursor in every module (what a lost notification left out)."""
        published = await self.sync_directory(org_id)
        overlap = timedelta(seconds=self.settings.crm_connector_poll_overlap_seconds)
        for module in self.settings.crm_connector_modules:
            cur = await storage.cursor(self.pool, org_id, "poll", module)
            if cur is None:  # history is the backfill's job; the poll starts now
                await storage.save_cursor(self.pool, org_id, "poll", module, datetime.now(UTC) - overlap)
                continue
            since = cur["modified_since"]
            newest = since
            async for page in self.crm[org_id].pages(module, since - overlap if since else None):
                if page.records:
                    published += await self.ingest(org_id, module, [str(r["id"]) for r in page.records], records=page.records)
                    newest = max([newest, *(domain.zoho_time(r.get("Modified_Time")) for r in page.records)])
            await storage.save_cursor(self.pool, org_id, "poll", module, newest)
        return published + await self.poll_deleted(org_id)

    async def poll_deleted(self, org_id: str) -> int:
        """Publish the deletions since the stored cursor (`GET /crm/{v}/{module}/deleted`): a lost delete
        notification is caught like a lost change. A deletion already published is the same event again."""
        published = 0
        overlap = timedelta(seconds=self.settings.crm_connector_poll_overlap_seconds)
        for module in self.settings.crm_connector_modules:
            if domain.KINDS[module].deleted is None:
                continue
            cur = await storage.cursor(self.pool, org_id, "poll-deleted", module)
            if cur is None:
                await storage.save_cursor(self.pool, org_id, "poll-deleted", module, datetime.now(UTC) - overlap)
                continue
            since = cur["modified_since"]
            newest = since
            async for page in self.crm[org_id].deleted_pages(module, since - overlap if since else None):
                if page.records:
                    published += await self.ingest(org_id, module, [str(r["id"]) for r in page.records], deleted=True)
                    newest = max([newest, *(domain.zoho_time(r.get("deleted_time")) for r in page.records)])
            await storage.save_cursor(self.pool, org_id, "poll-deleted", module, newest)
        return published

    # -- users and the org (no notifications: read each poll and backfill) ----------------------------

    async def sync_directory(self, org_id: str) -> int:
        """The org (its edition matters, S8) and its users (admins set the integration up, S3)."""
        crm = self.crm[org_id]
        users = await crm.users()
        org = {**await crm.org(), "hub_org_id": org_id}
        published = await self.ingest(org_id, "Users", [str(u["id"]) for u in users], records=users)
        return published + await self.ingest(org_id, "Org", [org_id], records=[{**org, "id": org_id}])

    # -- backfill -------------------------------------------------------------------------------------

    async def backfill(self, org_id: str, since: datetime | None, *, restart: bool = False,
                       progress: Callable[[str, int, int], None] | None = None) -> int:
        """Page every module's records modified after `since` into crm.ingest; resumable.

        The cursor (module, next page) is saved after each page is in the outbox, so an interrupted run goes
        on where it stopped; records read twice are the same events. `restart` forgets the cursors."""
        if restart:
            await storage.reset_cursors(self.pool, org_id, "backfill")
        published = await self.sync_directory(org_id)
        for module in self.settings.crm_connector_modules:
            cur = await storage.cursor(self.pool, org_id, "backfill", module)
            if cur is not None and cur["done"]:
                continue
            page_no = cur["page"] if cur is not None else 1
            token = cur["page_token"] if cur is not None else None
            while True:
                try:
                    page = await self.crm[org_id].modified_since(module, since, page_no, page_token=token)
                except ZohoError as exc:
                    if token is None or exc.code != "INVALID_DATA":
                        raise
                    # the saved page token expired (they live a day): read the module again (same events)
                    log.warning("backfill page token expired, the module is read again", org_id=org_id, module=module)
                    page_no, token = 1, None
                    continue
                if page.records:
                    published += await self.ingest(org_id, module, [str(r["id"]) for r in page.records], records=page.records)
                await storage.save_cursor(self.pool, org_id, "backfill", module, since, page_no + 1, done=not page.more,
                                          page_token=page.next_token)
                if progress:
                    progress(module, page_no, len(page.records))
                if not page.more:
                    break
                page_no, token = page_no + 1, page.next_token
        return published

    # -- background jobs (HubService.background) ---------------------------------------------------

    async def renewal_loop(self, service: Any) -> None:
        await self._forever("channel renewal", self.settings.crm_connector_renew_check_seconds, self.renew_channels)

    async def poll_loop(self, service: Any) -> None:
        async def all_orgs() -> None:
            for org_id in self.orgs:
                await self.poll(org_id)
        await self._forever("reconciliation poll", self.settings.crm_connector_poll_seconds, all_orgs)

    @staticmethod
    async def _forever(what: str, every: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Zoho or the database away: try again next round
                log.warning(f"{what} failed, trying again", error=repr(exc))
            await asyncio.sleep(every)
