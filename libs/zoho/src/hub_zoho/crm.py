"""Zoho CRM REST (v7 shapes): records by id, records modified since, multi-record writes, watch channels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub_zoho.api import ItemResult, ZohoApi, item_results

MAX_WRITE = 100  # records per insert/update call
MAX_READ_IDS = 100
PER_PAGE = 200


@dataclass
class Page:
    records: list[dict[str, Any]]
    more: bool
    next_token: str | None = None  # v5+: `info.next_page_token`, the only way past the first 2,000 records


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _page(resp: Any) -> Page:
    if resp.status_code in (204, 304):
        return Page([], False)
    body = resp.json()
    info = body.get("info", {})
    return Page(body.get("data", []), bool(info.get("more_records")), info.get("next_page_token"))


class CrmClient:
    def __init__(self, api: ZohoApi) -> None:
        self.api = api
        self.base = f"{api.org.crm_base}/crm/{api.org.crm_api_version}"

    async def get_records(self, module: str, ids: Sequence[str], fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The records as they are now; ids Zoho no longer has are simply absent (deleted)."""
        out: list[dict[str, Any]] = []
        for part in chunks(list(ids), MAX_READ_IDS):
            params = {"ids": ",".join(part)}
            if fields:
                params["fields"] = ",".join(fields)
            resp = await self.api.request("GET", f"{self.base}/{module}", params=params)
            if resp.status_code == 204:
                continue
            out.extend(resp.json().get("data", []))
        return out

    @staticmethod
    def _since(since: datetime | None) -> dict[str, str] | None:
        return {"If-Modified-Since": since.isoformat(timespec="seconds")} if since else None

    async def modified_since(self, module: str, since: datetime | None, page: int = 1, fields: Sequence[str] = (),
                             page_token: str | None = None) -> Page:
        """One page of the module's records modified after `since`, oldest first: page `page`, or the page
        `page_token` (from the previous page's `next_token`) names, which Zoho requires past 2,000 records."""
        params: dict[str, Any] = {"per_page": PER_PAGE, "sort_by": "Modified_Time", "sort_order": "asc"}
        if page_token:
            params["page_token"] = page_token
        else:
            params["page"] = page
        if fields:
            params["fields"] = ",".join(fields)
        return _page(await self.api.request("GET", f"{self.base}/{module}", params=params, headers=self._since(since)))

    async def pages(self, module: str, since: datetime | None, fields: Sequence[str] = ()) -> AsyncIterator[Page]:
        """Every page, by page token where Zoho gives one (v5+), else by page number (older versions)."""
        page, token = 1, None
        while True:
            got = await self.modified_since(module, since, page, fields, token)
            yield got
            if not got.more:
                return
            page, token = page + 1, got.next_token

    async def deleted(self, module: str, since: datetime | None, page: int = 1) -> Page:
        """One page of the module's deleted records (`GET /crm/{v}/{module}/deleted`: id, deleted_time, type)
        deleted after `since`: what a lost delete notification left out."""
        resp = await self.api.request("GET", f"{self.base}/{module}/deleted", params={"type": "all", "page": page, "per_page": PER_PAGE},
                                      headers=self._since(since))
        return _page(resp)

    async def deleted_pages(self, module: str, since: datetime | None) -> AsyncIterator[Page]:
        page = 1
        while True:
            got = await self.deleted(module, since, page)
            yield got
            if not got.more:
                return
            page += 1

    async def users(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = await self.api.request("GET", f"{self.base}/users", params={"type": "AllUsers", "page": page, "per_page": PER_PAGE})
            if resp.status_code == 204:
                return out
            body = resp.json()
            out.extend(body.get("users", []))
            if not body.get("info", {}).get("more_records"):
                return out
            page += 1

    async def org(self) -> dict[str, Any]:
        resp = await self.api.request("GET", f"{self.base}/org")
        return resp.json()["org"][0]

    async def insert(self, module: str, records: Sequence[dict[str, Any]]) -> list[ItemResult]:
        return await self._write("POST", module, records)

    async def update(self, module: str, records: Sequence[dict[str, Any]]) -> list[ItemResult]:
        return await self._write("PUT", module, records)

    async def _write(self, method: str, module: str, records: Sequence[dict[str, Any]]) -> list[ItemResult]:
        out: list[ItemResult] = []
        for part in chunks(list(records), MAX_WRITE):
            resp = await self.api.request(method, f"{self.base}/{module}", json={"data": list(part)})
            out.extend(item_results(resp))
        return out

    async def delete(self, module: str, ids: Sequence[str]) -> list[ItemResult]:
        out: list[ItemResult] = []
        for part in chunks(list(ids), MAX_WRITE):
            resp = await self.api.request("DELETE", f"{self.base}/{module}", params={"ids": ",".join(part)})
            out.extend(item_results(resp))
        return out

    async def watch(self, channel_id: int, events: Sequence[str], notify_url: str, token: str | None,
                    expiry: datetime) -> dict[str, Any]:
        """Enable (or renew: same channel id) a notification channel; returns Zoho's details of it."""
        item: dict[str, Any] = {"channel_id": channel_id, "events": list(events), "notify_url": notify_url,
                                "channel_expiry": expiry.isoformat(timespec="seconds")}
        if token:
            item["token"] = token
        resp = await self.api.request("POST", f"{self.base}/actions/watch", json={"watch": [item]})
        return resp.json()["watch"][0]
