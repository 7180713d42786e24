"""Zoho Projects -> pm.ingest: a poll per portal with a stored cursor per kind, and the optional workflow webhook.

Projects offers apps no change notifications (its webhooks are workflow rules a portal admin sets up in
the UI), so the poll is the source of truth and a webhook call only makes the next poll happen now.
Versions and event ids work as in the CRM connector (hub_zoho.state): the same state is the same event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr
from starlette.requests import Request

from hub_platform import metrics
from hub_platform.http import HubApi, UpstreamSecretAuth
from hub_platform.logs import get_logger
from hub_platform.waiting import wait_event
from hub_pm_connector import domain
from hub_pm_connector.settings import KINDS, SWEPT, PmConnectorSettings
from hub_schema import Payload
from hub_zoho import state
from hub_zoho.orgs import ZohoOrg
from hub_zoho.service import Emit, ZohoConnector
from hub_zoho.projects import ProjectsClient

log = get_logger(__name__)

REFUSED_WEBHOOKS = metrics.Counter(
    "hub_connector_webhooks_refused_total", "Projects webhook calls refused because their secret was wrong",
    ["connector"], registry=metrics.REGISTRY)


class Connector(ZohoConnector):
    """The PM connector's state: the orgs, one ZohoApi and ProjectsClient per org, the service, the poll's wake-up."""

    origin = "pm"

    def __init__(self, settings: PmConnectorSettings, orgs: dict[str, ZohoOrg] | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(settings, orgs, http)
        self.settings: PmConnectorSettings = settings
        self.projects = {org_id: ProjectsClient(api) for org_id, api in self.apis.items()}
        self.poll_now = asyncio.Event()
        self.rounds = 0
        """Rounds of `poll_loop` done (poll, and the sweep when due): what waits for the first round reads it."""

    async def observe(self, conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, record_id: str,
                      rec: dict[str, Any] | None, emit: Emit, command_id: uuid.UUID | None = None,
                      deleted_fields: dict[str, Any] | None = None) -> Payload | None:
        """Publish the record's state if it is new (same state -> same version -> same event id).

        `rec` None is a deletion (`deleted_fields` give what the delete event needs besides the id: the
        portal, a task's project); `kind` is the list it came from ("users" covers client users too)."""
        kind = domain.kind_of(kind, rec)
        project_id = (rec or {}).get("project_id") or (deleted_fields or {}).get("project_id")
        module = domain.scope(portal_id, kind, str(project_id) if project_id else None)
        if rec is None:
            if kind not in domain.DELETED or deleted_fields is None:
                return None
            fields = None
        else:
            try:
                fields = domain.record_fields(kind, portal_id, rec)
                domain.upsert_payload(kind, fields, modified_at=domain.zoho_time(rec.get("last_modified_time")), version=0,
                                      command_id=None)
            except domain.NotPublished as exc:
                log.info("zoho projects record not published", org_id=org_id, kind=kind, record_id=record_id, why=str(exc))
                return None
        got = await state.version_of(conn, org_id, module, record_id, fields, command_id,
                                     created_by=state.command_marker((rec or {}).get("hub_command_id")),
                                     command_module="users" if kind == "client_users" else kind)
        if got is None:
            return None
        version, cid = got
        if fields is None:
            model = domain.DELETED[kind]
            known = {k: v for k, v in {"portal_id": portal_id, **(deleted_fields or {})}.items() if k in model.model_fields}
            payload: Payload = model.model_validate(
                {**known, "id": record_id, "modified_at": datetime.now(UTC), "version": version, "command_id": cid})
        else:
            payload = domain.upsert_payload(kind, fields, modified_at=domain.zoho_time(rec.get("last_modified_time")),  # type: ignore[union-attr]
                                            version=version, command_id=cid)
        await emit(payload, f"{domain.ENTITY[kind]}:{record_id}", state.event_id(org_id, module, record_id, version))
        return payload

    async def publish(self, org_id: str, portal_id: str, kind: str, records: list[dict[str, Any]]) -> int:
        published = 0
        async with self.pool.acquire() as conn, conn.transaction():
            emit = self.outbox_emitter(conn, org_id)
            for rec in records:
                if await self.observe(conn, org_id, portal_id, kind, str(rec["id"]), rec, emit) is not None:
                    published += 1
        self.service.relay.wake()
        return published

    # -- the poll -----------------------------------------------------------------------------------

    async def poll(self, org_id: str, *, purpose: str = "poll", since: datetime | None = None,
                   progress: Callable[[str, int], None] | None = None) -> int:
        """Publish what changed in each of the org's portals since the stored cursor (per portal and kind).

        The first poll of a portal reads everything (Projects has no history API the backfill could use
        differently): with `purpose="backfill"` and `since`, that is `hub-connector backfill`."""
        client = self.projects[org_id]
        overlap = timedelta(seconds=self.settings.pm_connector_poll_overlap_seconds)
        portal_ids = set(self.orgs[org_id].portal_ids)
        published = 0
        portals = [p for p in await client.portals() if str(p["id"]) in portal_ids]
        for portal in portals:
            published += await self.publish(org_id, str(portal["id"]), "portals", [portal])
        for portal_id in sorted(portal_ids):
            for kind in KINDS:
                key = f"{portal_id}/{kind}"
                cur = await state.cursor(self.pool, org_id, purpose, key)
                if cur is not None and cur["done"]:
                    continue
                start = cur["modified_since"] if cur is not None else since
                newest = start
                async for page in client.portal_list(portal_id, kind, start - overlap if start else None):
                    if page:
                        published += await self.publish(org_id, portal_id, kind, page)
                        newest = max([t for t in [newest, *(domain.zoho_time(r.get("last_modified_time")) for r in page)] if t])
                        await state.save_cursor(self.pool, org_id, purpose, key, newest)
                        if progress:
                            progress(key, len(page))
                await state.save_cursor(self.pool, org_id, purpose, key, newest, done=purpose == "backfill")
        return published

    # -- deletions ------------------------------------------------------------------------------------

    async def sweep(self, org_id: str) -> int:
        """Publish the deletions: Projects lists no deleted records, so the ids each portal has now are
        compared with those the connector published and not yet saw deleted (a full id listing per kind)."""
        client = self.projects[org_id]
        published = 0
        for portal_id in sorted(set(self.orgs[org_id].portal_ids)):
            for kind in SWEPT:
                present = await client.ids(portal_id, kind)
                modules = [domain.scope(portal_id, k) for k in (("users", "client_users") if kind == "users" else (kind,))]
                rows = await self.pool.fetch(
                    """SELECT module, record_id FROM record_state
                       WHERE org_id = $1 AND NOT deleted AND (module = ANY($2) OR ($3 AND module LIKE $4 || '/%/tasks'))""",
                    org_id, modules, kind == "tasks", portal_id)
                gone = [r for r in rows if r["record_id"] not in present]
                if not gone:
                    continue
                async with self.pool.acquire() as conn, conn.transaction():
                    emit = self.outbox_emitter(conn, org_id)
                    for row in gone:
                        parts = row["module"].split("/")
                        was = parts[-1]
                        extra = {"project_id": parts[1]} if was == "tasks" else {}
                        if await self.observe(conn, org_id, portal_id, was, row["record_id"], None, emit,
                                              deleted_fields=extra) is not None:
                            published += 1
                self.service.relay.wake()
        return published

    async def poll_loop(self, service: Any) -> None:
        last_sweep = 0.0
        while True:
            sweep = time.monotonic() - last_sweep >= self.settings.pm_connector_sweep_seconds
            for org_id in self.orgs:
                try:
                    await self.poll(org_id)
                    if sweep:
                        await self.sweep(org_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("projects poll failed, trying again", org_id=org_id, error=repr(exc))
            if sweep:
                last_sweep = time.monotonic()
            self.rounds += 1
            self.poll_now.clear()
            await wait_event(self.poll_now, self.settings.pm_connector_poll_seconds)

    # -- the optional workflow webhook ----------------------------------------------------------------

    async def _webhook_secret_sent(self, request: Request) -> str | None:
        return request.headers.get("X-Hub-Webhook-Secret") or request.query_params.get("secret")

    def _webhook_secret(self, org_id: str) -> SecretStr | None:
        org = self.orgs.get(org_id)
        return org.webhook_secret if org else None

    def _webhook_refused(self, request: Request) -> None:
        REFUSED_WEBHOOKS.labels(self.settings.service_name).inc()
        log.warning("projects webhook with a wrong secret refused (possible forgery)", org_id=request.path_params["org_id"],
                    client=request.client.host if request.client else None)

    def api(self, service: Any = None) -> HubApi:
        """A Projects workflow rule's webhook: a hint that something changed; the poll runs now.

        Zoho signs nothing: the rule must send the org's `webhook_secret` in the `X-Hub-Webhook-Secret`
        header (or a `secret` parameter); it is compared in constant time and a wrong one is refused (403)."""
        api = HubApi()
        webhook_secret = UpstreamSecretAuth(
            "webhookSecret", "the org's webhook secret (X-Hub-Webhook-Secret)", secret_of=self._webhook_secret,
            presented=self._webhook_secret_sent, on_refused=self._webhook_refused, header="X-Hub-Webhook-Secret")

        @api.post("/zoho/projects/webhook/{org_id}", auth=webhook_secret, status_code=202,
                  summary="a Projects workflow rule's push (makes the poll run now)")
        async def on_webhook(org_id: str) -> dict[str, Any]:
            self.poll_now.set()
            return {"accepted": True}

        return api
