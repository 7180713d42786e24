"""A fake Zoho for tests and demos: the endpoints the connectors call, with their documented shapes and limits.

Accounts  POST /oauth/v2/token                     refresh-token grant; tokens expire (`token_ttl`); at most
                                                   10 access tokens per refresh token per 10 minutes
CRM       GET /crm/{v}/users, GET /crm/{v}/org        users (type=AllUsers) and the org itself
          GET|POST|PUT|DELETE /crm/{v}/{module}    records (`ids=`, `If-Modified-Since`, `page`/`per_page`, past
                                                   2,000 records only `page_token` = info.next_page_token);
                                                   writes of at most 100 records, 201/200 all, 207 some, 400 none
          GET /crm/{v}/{module}/deleted            the recycle bin (`type`, `If-Modified-Since`, paged)
          POST /crm/{v}/actions/watch               notification channels (default expiry 1 h, at most 1 day
                                                   before v4, a week from v4); Zoho POSTs changes to notify_url
Projects  /api/v3/portals, /api/v3/portal/{portal}/{projects|clients|users|projectgroups}[/{id}] (GET, POST,
          PATCH, DELETE; users with `user_type: client` are client users), .../projects/{p}/{users|clients}
          (add members, 207 when some fail), .../projects/{p}/tasks[/{t}[/comments]], .../tasks, .../comments:
                                                   `last_modified_time`, `page`/`per_page`, bulk PATCH -> 207
Limits    every API call: `Authorization: Zoho-oauthtoken ...` (401 INVALID_TOKEN), a concurrency cap and a
          requests-per-window cap (429 TOO_MANY_REQUESTS + Retry-After), daily credits (429 at 0)
Faults    `drop_notifications` (the next n are lost, as Zoho's FAQ warns), `fail_next` (the next n API calls 500),
          `fail_paths` (the next n calls of one method and path 500)

Its "UI" (a person editing records, which also fires the notifications) is `FakeZoho.ui_*` in-process and
`/fake/...` over HTTP; `/fake/config` changes the limits at run time. Its records live in its own tables
(SQLite, hub_fakezoho.tables: in memory for a test, a file that outlives restarts for `make up ZOHO=fake`);
access tokens and watch channels live in the process, as a restarted Zoho would make the connectors refresh
and re-watch (a notification lost meanwhile is the reconciliation poll's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub_fakezoho.tables import Kinds, highest_numeric_id, open_tables

MANDATORY = {"Accounts": ["Account_Name"], "Contacts": ["Last_Name"], "Deals": ["Deal_Name", "Stage"], "Leads": ["Last_Name"],
             "Tasks": ["Subject"], "Notes": ["Note_Content", "Parent_Id"]}
MODULES = tuple(MANDATORY)


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class Limits:
    token_ttl: float = 3600.0
    tokens_per_refresh_window: int = 10
    concurrency: int = 20
    requests_per_window: int = 0  # 0 = no cap
    window_seconds: float = 1.0
    retry_after: float = 0.2
    daily_credits: int = 0  # 0 = no cap
    drop_notifications: int = 0
    fail_next: int = 0
    max_channel_expiry_seconds: float = 7 * 24 * 3600.0  # v4 and later; a day before
    max_discrete_records: int = 2000  # records reachable with `page`; past them only `page_token` (v5+)
    fail_paths: dict[str, int] = field(default_factory=dict)  # "POST /api/v3/portal/1/projects" -> the next n answer 500


@dataclass
class Channel:
    channel_id: int
    events: list[str]
    notify_url: str
    token: str | None
    expires_at: datetime


@dataclass
class FakeZoho:
    client_id: str = "1000.FAKECLIENT"
    client_secret: str = "fake-secret"
    refresh_token: str = "1000.fake-refresh"
    limits: Limits = field(default_factory=Limits)
    db_path: str = ":memory:"  # its tables (hub_fakezoho.tables): in memory for a test, a file for `make up ZOHO=fake`
    channels: dict[int, Channel] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (monotonic)
    issued: deque[float] = field(default_factory=deque)
    org: dict[str, Any] = field(default_factory=lambda: {"id": "10001", "company_name": "Fake Org",
                                                         "license_details": {"paid_type": "enterprise", "paid": True}})
    notifications_sent: list[dict[str, Any]] = field(default_factory=list)
    notifications_dropped: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    throttled: int = 0
    credits_used: int = 0

    def __post_init__(self) -> None:
        self.db = open_tables(self.db_path)
        self.crm = Kinds(self.db, "crm_records")  # module -> id -> record
        self.crm_deleted = Kinds(self.db, "crm_recycle_bin")  # module -> id -> deleted-record entry
        self.pm = Kinds(self.db, "pm_records")  # kind -> id -> record
        self.portals = Kinds(self.db, "pm_portals")["portals"]
        self._ids = itertools.count(max(5_000_000_001, highest_numeric_id(self.db) + 1))
        self._window: deque[float] = deque()
        self._in_flight = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._page_tokens: dict[str, tuple[str, str | None, int, float]] = {}  # token -> (module, since, offset, expiry)
        self.http = httpx.AsyncClient(timeout=10.0)

    def new_id(self) -> str:
        return str(next(self._ids))

    # -- OAuth --------------------------------------------------------------------------------

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return 400, {"error": "invalid_client"}
        if form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_code"}
        t = time.monotonic()
        while self.issued and self.issued[0] < t - 600:
            self.issued.popleft()
        if len(self.issued) >= self.limits.tokens_per_refresh_window:
            return 400, {"error": "Access Denied",
                         "error_description": "You have made too many requests continuously. Please try again after some time."}
        self.issued.append(t)
        token = f"1000.{secrets.token_hex(16)}"
        self.tokens[token] = t + self.limits.token_ttl
        return 200, {"access_token": token, "api_domain": "", "token_type": "Bearer", "expires_in": int(self.limits.token_ttl)}

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (what an hour does)."""
        for token in self.tokens:
            self.tokens[token] = 0.0

    # -- limits -------------------------------------------------------------------------------

    def _gate(self, request: Request) -> JSONResponse | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Zoho-oauthtoken ").strip()
        if not auth.startswith("Zoho-oauthtoken ") or self.tokens.get(token, 0.0) <= time.monotonic():
            return JSONResponse({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}, 401)
        lim = self.limits
        if lim.daily_credits and self.credits_used >= lim.daily_credits:
            self.throttled += 1
            return JSONResponse({"code": "TOO_MANY_REQUESTS", "details": {}, "message": "daily API credits exceeded",
                                 "status": "error"}, 429, headers={"Retry-After": str(lim.retry_after)})
        t = time.monotonic()
        while self._window and self._window[0] <= t - lim.window_seconds:
            self._window.popleft()
        if (lim.requests_per_window and len(self._window) >= lim.requests_per_window) or self._in_flight >= lim.concurrency:
            self.throttled += 1
            return JSONResponse({"code": "TOO_MANY_REQUESTS", "details": {}, "message": "too many requests", "status": "error"},
                                429, headers={"Retry-After": str(lim.retry_after)})
        call = f"{request.method} {request.url.path}"
        if lim.fail_next > 0 or lim.fail_paths.get(call, 0) > 0:
            if lim.fail_paths.get(call, 0) > 0:
                lim.fail_paths[call] -= 1
            else:
                lim.fail_next -= 1
            return JSONResponse({"code": "INTERNAL_ERROR", "message": "try again", "status": "error"}, 500)
        self._window.append(t)
        self.credits_used += 1
        return None

    def guarded(self, fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            refused = self._gate(request)
            if refused is not None:
                self.calls.append((request.method, request.url.path, refused.status_code))
                return refused
            self._in_flight += 1
            try:
                resp = await fn(request)
            finally:
                self._in_flight -= 1
            self.calls.append((request.method, request.url.path, resp.status_code))
            return resp
        return endpoint

    # -- CRM records ----------------------------------------------------------------------------

    def _stamp(self, rec: dict[str, Any], created: bool) -> None:
        t = iso(now())
        rec["Modified_Time"] = t
        if created:
            rec["Created_Time"] = t

    def crm_write(self, module: str, items: list[dict[str, Any]], *, insert: bool) -> tuple[int, list[dict[str, Any]], list[str]]:
        """Apply a multi-record write the way Zoho does: each record on its own, one result per record."""
        results: list[dict[str, Any]] = []
        changed: list[str] = []
        for item in items:
            if insert:
                missing = [f for f in MANDATORY.get(module, []) if item.get(f) in (None, "")]
                if missing:
                    results.append({"code": "MANDATORY_NOT_FOUND", "details": {"api_name": missing[0]},
                                    "message": "required field not found", "status": "error"})
                    continue
                rec = {k: v for k, v in item.items() if k != "id"}
                rec["id"] = self.new_id()
                self._stamp(rec, True)
                self.crm[module][rec["id"]] = rec
                code = "SUCCESS"
            else:
                rid = str(item.get("id", ""))
                rec = self.crm[module].get(rid)
                if rec is None:
                    results.append({"code": "INVALID_DATA", "details": {"api_name": "id"}, "message": "the related id given seems to be invalid",
                                    "status": "error"})
                    continue
                if any(item.get(f) == "" for f in MANDATORY.get(module, [])):
                    results.append({"code": "MANDATORY_NOT_FOUND", "details": {"api_name": next(f for f in MANDATORY[module] if item.get(f) == "")},
                                    "message": "required field not found", "status": "error"})
                    continue
                rec.update({k: v for k, v in item.items() if k != "id"})
                self._stamp(rec, False)
                self.crm[module][rid] = rec
                code = "SUCCESS"
            changed.append(rec["id"])
            results.append({"code": code, "details": {"id": rec["id"], "Modified_Time": rec["Modified_Time"]},
                            "message": "record added" if insert else "record updated", "status": "success"})
        ok = sum(1 for r in results if r["status"] == "success")
        status = (201 if insert else 200) if ok == len(results) else (207 if ok else 400)
        return status, results, changed

    def ui_crm(self, module: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A person creates (no `id`) or edits a CRM record in the UI: the channels hear of it."""
        insert = "id" not in fields
        status, results, changed = self.crm_write(module, [fields], insert=insert)
        if not changed:
            raise ValueError(results[0])
        self.notify(module, "insert" if insert else "update", changed)
        return self.crm[module][changed[0]]

    def ui_crm_delete(self, module: str, record_id: str) -> None:
        self._crm_delete(module, record_id)
        self.notify(module, "delete", [record_id])

    def _crm_delete(self, module: str, record_id: str) -> bool:
        """Into the recycle bin, where `GET /crm/{v}/{module}/deleted` lists it."""
        rec = self.crm[module].pop(record_id, None)
        if rec is None:
            return False
        self.crm_deleted[module][record_id] = {"id": record_id, "deleted_time": iso(now()), "type": "recycle",
                                               "display_name": rec.get("Account_Name") or rec.get("Subject") or rec.get("Deal_Name") or "",
                                               "deleted_by": {"id": "fake-user", "name": "Fake User"}}
        return True

    async def crm_deleted_records(self, request: Request) -> Response:
        """Deleted records of a module (type=all|recycle|permanent, `If-Modified-Since`, page/per_page)."""
        module = request.path_params["module"]
        if module not in MODULES:
            return JSONResponse({"code": "INVALID_MODULE", "message": "the module name given seems to be invalid", "status": "error"}, 400)
        q = request.query_params
        rows = sorted(self.crm_deleted[module].values(), key=lambda r: (r["deleted_time"], r["id"]))
        if q.get("type", "all") not in ("all", "recycle"):
            rows = []
        since = request.headers.get("If-Modified-Since")
        if since:
            rows = [r for r in rows if parse_time(r["deleted_time"]) > parse_time(since)]
        page, per_page = int(q.get("page", "1")), min(int(q.get("per_page", "200")), 200)
        part = rows[(page - 1) * per_page: page * per_page]
        if not part:
            return Response(status_code=204)
        return JSONResponse({"data": part, "info": {"page": page, "per_page": per_page, "count": len(part),
                                                    "more_records": page * per_page < len(rows)}})

    def ui_crm_user(self, fields: dict[str, Any]) -> dict[str, Any]:
        """An admin adds or changes a CRM user (Setup > Users); users have no notifications, the poll reads them."""
        rid = str(fields.get("id") or self.new_id())
        rec = {**self.crm["users"].get(rid, {"status": "active", "profile": {"name": "Standard"}, "locale": "en_US"}), **fields, "id": rid}
        self._stamp(rec, "Created_Time" not in rec)
        self.crm["users"][rid] = rec
        return rec

    async def crm_users(self, request: Request) -> Response:
        q = request.query_params
        rows = sorted(self.crm["users"].values(), key=lambda r: r["id"])
        page, per_page = int(q.get("page", "1")), min(int(q.get("per_page", "200")), 200)
        part = rows[(page - 1) * per_page: page * per_page]
        if not part:
            return Response(status_code=204)
        return JSONResponse({"users": part, "info": {"page": page, "per_page": per_page, "count": len(part),
                                                     "more_records": page * per_page < len(rows)}})

    async def crm_org(self, request: Request) -> Response:
        return JSONResponse({"org": [self.org]})

    async def crm_records(self, request: Request) -> Response:
        module = request.path_params["module"]
        if module not in MODULES:
            return JSONResponse({"code": "INVALID_MODULE", "message": "the module name given seems to be invalid", "status": "error"}, 400)
        table = self.crm[module]
        q = request.query_params
        if request.method == "GET":
            if "ids" in q:
                found = [table[i] for i in q["ids"].split(",") if i in table]
                return JSONResponse({"data": found}) if found else Response(status_code=204)
            since = request.headers.get("If-Modified-Since")
            per_page = min(int(q.get("per_page", "200")), 200)
            if "page_token" in q:  # v5+: the only way past the first 2,000 records
                token = self._page_tokens.get(q["page_token"])
                if token is None or token[0] != module or token[3] < time.monotonic():
                    return JSONResponse({"code": "INVALID_DATA", "details": {"api_name": "page_token"},
                                         "message": "invalid or expired page token", "status": "error"}, 400)
                _, since, offset, _ = token
                page = offset // per_page + 1
            else:
                page = int(q.get("page", "1"))
                offset = (page - 1) * per_page
                if offset >= self.limits.max_discrete_records:
                    return JSONResponse({"code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED", "details": {"limit": self.limits.max_discrete_records},
                                         "message": "use page_token to fetch more than 2000 records", "status": "error"}, 400)
            rows = sorted(table.values(), key=lambda r: (r["Modified_Time"], r["id"]))
            if since:
                rows = [r for r in rows if parse_time(r["Modified_Time"]) > parse_time(since)]
            part = rows[offset: offset + per_page]
            if not part:
                return Response(status_code=304 if since else 204)
            more = offset + per_page < len(rows)
            info: dict[str, Any] = {"page": page, "per_page": per_page, "count": len(part), "more_records": more}
            if more:
                token_value = secrets.token_hex(12)
                self._page_tokens[token_value] = (module, since, offset + per_page, time.monotonic() + 86400)
                info.update({"next_page_token": token_value, "page_token_expiry": iso(now() + timedelta(days=1))})
            return JSONResponse({"data": part, "info": info})
        if request.method == "DELETE":
            ids = q.get("ids", "").split(",")
            results = []
            for i in ids:
                if self._crm_delete(module, i):
                    results.append({"code": "SUCCESS", "details": {"id": i}, "message": "record deleted", "status": "success"})
                else:
                    results.append({"code": "INVALID_DATA", "details": {"id": i}, "message": "record not deleted", "status": "error"})
            self.notify(module, "delete", [r["details"]["id"] for r in results if r["status"] == "success"])
            return JSONResponse({"data": results})
        body = json.loads(await request.body() or b"{}")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            return JSONResponse({"code": "INVALID_DATA", "message": "data must be a non-empty list", "status": "error"}, 400)
        if len(data) > 100:
            return JSONResponse({"code": "LIMIT_EXCEEDED", "details": {"limit": 100}, "message": "at most 100 records per call",
                                 "status": "error"}, 400)
        insert = request.method == "POST"
        status, results, changed = self.crm_write(module, data, insert=insert)
        self.notify(module, "insert" if insert else "update", changed)
        return JSONResponse({"data": results}, status)

    # -- watch channels and notifications ---------------------------------------------------------

    async def watch(self, request: Request) -> Response:
        version = request.path_params["version"]
        body = json.loads(await request.body() or b"{}")
        out = []
        max_expiry = self.limits.max_channel_expiry_seconds if int(version.lstrip("v") or 0) >= 4 else 24 * 3600.0
        for item in body.get("watch", []):
            token = item.get("token")
            if token is not None and len(token) > 50:
                return JSONResponse({"watch": [{"code": "INVALID_DATA", "details": {"api_name": "token"},
                                                "message": "token length exceeds 50", "status": "error"}]}, 400)
            expiry = parse_time(item["channel_expiry"]) if item.get("channel_expiry") else now() + timedelta(hours=1)
            if expiry > now() + timedelta(seconds=max_expiry) or expiry <= now():
                return JSONResponse({"watch": [{"code": "INVALID_DATA", "details": {"api_name": "channel_expiry"},
                                                "message": "invalid channel expiry", "status": "error"}]}, 400)
            ch = Channel(int(item["channel_id"]), list(item["events"]), item["notify_url"], token, expiry)
            self.channels[ch.channel_id] = ch
            out.append({"code": "SUCCESS", "status": "success", "message": "Successfully subscribed for actions-watch of the given module",
                        "details": {"events": [{"channel_expiry": iso(expiry), "resource_name": e.split(".")[0],
                                                "channel_id": ch.channel_id} for e in ch.events]}})
        return JSONResponse({"watch": out})

    def notify(self, module: str, operation: str, ids: list[str]) -> None:
        if not ids:
            return
        for ch in list(self.channels.values()):
            if ch.expires_at <= now():
                continue
            if f"{module}.all" not in ch.events and f"{module}.{operation[:6]}" not in ch.events and \
                    f"{module}.{operation}" not in ch.events:
                continue
            body = {"server_time": int(time.time() * 1000), "query_params": {}, "module": module,
                    "resource_uri": f"/crm/v7/{module}", "ids": list(ids), "affected_fields": [], "operation": operation,
                    "channel_id": ch.channel_id, "token": ch.token}
            if self.limits.drop_notifications > 0:
                self.limits.drop_notifications -= 1
                self.notifications_dropped.append(body)
                continue
            task = asyncio.get_running_loop().create_task(self._deliver(ch.notify_url, body))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self.http.post(url, json=body)
        self.notifications_sent.append(body)

    # -- Projects -----------------------------------------------------------------------------

    def ui_pm(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A person creates (no `id`) or edits a Projects record (kind: projects, tasks, comments, users, clients)."""
        t = iso(now())
        rid = str(fields.get("id") or self.new_id())
        rec = {**self.pm[kind].get(rid, {"created_time": t}), **fields, "id": rid, "last_modified_time": t}
        if kind == "users":
            rec.setdefault("zpuid", rid)
        self.pm[kind][rid] = rec
        return rec

    def _pm_page(self, request: Request, key: str, rows: list[dict[str, Any]]) -> Response:
        q = request.query_params
        rows = sorted(rows, key=lambda r: (r.get("last_modified_time", ""), r["id"]))
        if "last_modified_time" in q:
            since = parse_time(q["last_modified_time"])
            rows = [r for r in rows if parse_time(r["last_modified_time"]) > since]
        page, per_page = int(q.get("page", "1")), min(int(q.get("per_page", "100")), 200)
        part = rows[(page - 1) * per_page: page * per_page]
        return JSONResponse({key: part, "page_info": {"page": page, "per_page": per_page, "has_next_page": page * per_page < len(rows)}})

    async def pm_portals(self, request: Request) -> Response:
        return JSONResponse({"portals": list(self.portals.values())})

    async def pm_project_tasks(self, request: Request) -> Response:
        p = request.path_params
        if p["project"] not in self.pm["projects"]:
            return JSONResponse({"error": {"status_code": "404", "title": "Project not found"}}, 404)
        if request.method == "GET":
            return self._pm_page(request, "tasks", [t for t in self.pm["tasks"].values() if t["project_id"] == p["project"]])
        body = json.loads(await request.body() or b"{}")
        if request.method == "PATCH":  # bulk update: one result per task, 207 when only some went through
            results = []
            for item in body.get("tasks", []):
                task = self.pm["tasks"].get(str(item.get("id")))
                if task is None or task["project_id"] != p["project"]:
                    results.append({"status": "error", "code": "NOT_FOUND", "message": "Task not found", "details": {"id": item.get("id")}})
                    continue
                rec = self.ui_pm("tasks", {**task, **item})
                results.append({"status": "success", "code": "SUCCESS", "message": "updated", "details": {"id": rec["id"]}})
            ok = sum(r["status"] == "success" for r in results)
            return JSONResponse({"tasks": results}, 200 if ok == len(results) else (207 if ok else 400))
        if not body.get("name"):
            return JSONResponse({"error": {"status_code": "400", "title": "Given input is invalid", "details": [{"field_name": "name"}]}}, 400)
        rec = self.ui_pm("tasks", {**{k: v for k, v in body.items() if k != "id"}, "portal_id": p["portal"], "project_id": p["project"]})
        return JSONResponse({"tasks": [rec]}, 201)

    async def pm_task(self, request: Request) -> Response:
        p = request.path_params
        task = self.pm["tasks"].get(p["task"])
        if task is None or task["project_id"] != p["project"]:
            return JSONResponse({"error": {"status_code": "404", "title": "Task not found"}}, 404)
        if request.method == "GET":
            return JSONResponse({"tasks": [task]})
        if request.method == "DELETE":
            del self.pm["tasks"][p["task"]]
            return Response(status_code=204)
        body = json.loads(await request.body() or b"{}")
        return JSONResponse({"tasks": [self.ui_pm("tasks", {**task, **{k: v for k, v in body.items() if k != "id"}})]})

    # Projects records other than tasks: projects, clients (client companies), users (portal users and,
    # with `user_type: client`, client users), projectgroups. Created and changed through the API (the
    # connector's commands) or the fake UI; a creation answers 201 with the record under its kind's key.

    PM_REQUIRED = {"projects": "name", "clients": "name", "projectgroups": "name", "users": "email"}

    def _pm_error(self, status: int, title: str, field_name: str | None = None) -> JSONResponse:
        error: dict[str, Any] = {"status_code": str(status), "title": title}
        if field_name:
            error["details"] = [{"field_name": field_name}]
        return JSONResponse({"error": error}, status)

    def _pm_record(self, kind: str, portal: str, rid: str) -> dict[str, Any] | None:
        rec = self.pm[kind].get(rid)
        return rec if rec is not None and rec.get("portal_id") == portal else None

    def _pm_refs(self, portal: str, body: dict[str, Any]) -> JSONResponse | None:
        """Every user, client, group and client user a write names must exist in the portal (404 otherwise)."""
        for key, kind in (("owner", "users"), ("group", "projectgroups"), ("client_company", "clients")):
            ref = body.get(key)
            rid = str(ref.get("zpuid") or ref.get("id")) if isinstance(ref, dict) else None
            if rid and self._pm_record(kind, portal, rid) is None:
                return self._pm_error(404, f"{key} {rid} not found", key)
        for key, kind in (("users", "users"), ("client_companies", "clients"), ("client_users", "users")):
            for ref in body.get(key) or []:
                rid = str(ref.get("zpuid") or ref.get("id"))
                if self._pm_record(kind, portal, rid) is None:
                    return self._pm_error(404, f"{key} {rid} not found", key)
        return None

    def _email_taken(self, portal: str, email: str, but: str | None = None) -> dict[str, Any] | None:
        for u in self.pm["users"].values():
            if u.get("portal_id") == portal and u["id"] != but and str(u.get("email", "")).lower() == email.lower() \
                    and u.get("status", "active") == "active":
                return u
        return None

    async def pm_kind(self, request: Request) -> Response:
        """GET: the portal's records of a kind (paged, `last_modified_time`); POST: create one."""
        p = request.path_params
        kind, portal = p["kind"], p["portal"]
        if request.method == "GET":
            rows = [r for r in self.pm[kind].values() if r.get("portal_id") == portal]
            if "user_type" in request.query_params:
                rows = [r for r in rows if r.get("user_type", "portal") == request.query_params["user_type"]]
            return self._pm_page(request, kind, rows)
        if portal not in self.portals:
            return self._pm_error(404, "Portal not found")
        if kind not in self.PM_REQUIRED:
            return self._pm_error(405, f"{kind} cannot be created here")
        body = json.loads(await request.body() or b"{}")
        required = self.PM_REQUIRED[kind]
        if not body.get(required):
            return self._pm_error(400, "Given input is invalid", required)
        if (refused := self._pm_refs(portal, body)) is not None:
            return refused
        fields = {k: v for k, v in body.items() if k != "id"}
        if kind == "users":
            taken = self._email_taken(portal, body["email"])
            if taken is not None:
                return self._pm_error(409, f"a user with e-mail {body['email']} exists already", "email")
            inactive = next((u for u in self.pm["users"].values() if u.get("portal_id") == portal
                             and str(u.get("email", "")).lower() == body["email"].lower()), None)
            fields = {"status": "active", "user_type": "portal", **fields, **({"id": inactive["id"]} if inactive else {})}
        rec = self.ui_pm(kind, {**fields, "portal_id": portal})
        return JSONResponse({kind: [rec]}, 201)

    async def pm_kind_record(self, request: Request) -> Response:
        """GET, PATCH (partial update) or DELETE one project, client, user or project group."""
        p = request.path_params
        kind, portal, rid = p["kind"], p["portal"], p["rid"]
        rec = self._pm_record(kind, portal, rid)
        if rec is None:
            return self._pm_error(404, f"{kind} {rid} not found")
        if request.method == "GET":
            return JSONResponse({kind: [rec]})
        if request.method == "DELETE":
            del self.pm[kind][rid]
            return Response(status_code=204)
        body = json.loads(await request.body() or b"{}")
        required = self.PM_REQUIRED.get(kind)
        if required and required in body and not body[required]:
            return self._pm_error(400, "Given input is invalid", required)
        if (refused := self._pm_refs(portal, body)) is not None:
            return refused
        if kind == "users" and body.get("email") and self._email_taken(portal, body["email"], but=rid):
            return self._pm_error(409, f"a user with e-mail {body['email']} exists already", "email")
        return JSONResponse({kind: [self.ui_pm(kind, {**rec, **{k: v for k, v in body.items() if k != "id"}})]})

    async def pm_project_members(self, request: Request) -> Response:
        """POST .../projects/{p}/users ({"users": [{"zpuid", "role", "permissions"}]}) or .../clients
        ({"client_users": [{"id"}]}): add members to a project; one result each, 207 when only some went in."""
        p = request.path_params
        if p["members"] not in ("users", "clients"):
            return self._pm_error(404, "Not found")
        project = self._pm_record("projects", p["portal"], p["project"])
        if project is None:
            return self._pm_error(404, "Project not found")
        body = json.loads(await request.body() or b"{}")
        results, users = [], list(project.get("users") or [])
        companies, client_users = list(project.get("client_companies") or []), list(project.get("client_users") or [])
        items = body.get("users" if p["members"] == "users" else "client_users") or []
        for item in items:
            uid = str(item.get("zpuid") or item.get("id"))
            user = self._pm_record("users", p["portal"], uid)
            is_client = user is not None and user.get("user_type") == "client"
            if user is None or is_client != (p["members"] == "clients"):
                results.append({"status": "error", "code": "NOT_FOUND", "message": "User not found", "details": {"id": uid}})
                continue
            if is_client:
                client_users.append({"id": uid})
                companies.append({"id": str(user["client_company"]["id"])})
            else:
                users.append({"zpuid": uid, "role": item.get("role"), "permissions": item.get("permissions", [])})
            results.append({"status": "success", "code": "SUCCESS", "message": "added", "details": {"id": uid}})

        def unique(refs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
            return list({str(r.get(key) or r.get("id")): r for r in refs}.values())

        ok = sum(r["status"] == "success" for r in results)
        if ok:
            self.ui_pm("projects", {**project, "users": unique(users, "zpuid"), "client_companies": unique(companies, "id"),
                                    "client_users": unique(client_users, "id")})
        return JSONResponse({p["members"]: results}, 200 if ok == len(results) else (207 if ok else 400))

    async def pm_comments(self, request: Request) -> Response:
        p = request.path_params
        return self._pm_page(request, "comments", [c for c in self.pm["comments"].values() if c.get("task_id") == p["task"]])

    # -- OAuth route, fake UI, app -------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        status, body = self.grant(form)
        return JSONResponse(body, status)

    async def fake_config(self, request: Request) -> Response:
        if request.method == "POST":
            for k, v in json.loads(await request.body() or b"{}").items():
                setattr(self.limits, k, type(getattr(self.limits, k))(v))
        return JSONResponse(self.limits.__dict__)

    async def fake_crm(self, request: Request) -> Response:
        module = request.path_params["module"]
        if request.method == "GET":
            return JSONResponse({"data": list(self.crm[module].values())})
        body = json.loads(await request.body())
        return JSONResponse(self.ui_crm_user(body) if module == "users" else self.ui_crm(module, body))

    async def fake_pm(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if request.method == "GET":
            return JSONResponse({kind: list(self.pm[kind].values())})
        body = json.loads(await request.body())
        if kind == "portals":
            self.portals[str(body["id"])] = body
            return JSONResponse(body)
        return JSONResponse(self.ui_pm(kind, body))

    def app(self) -> Starlette:
        g = self.guarded
        routes = [
            Route("/oauth/v2/token", self.token_endpoint, methods=["POST"]),
            Route("/crm/{version}/actions/watch", g(self.watch), methods=["POST"]),
            Route("/crm/{version}/users", g(self.crm_users), methods=["GET"]),
            Route("/crm/{version}/org", g(self.crm_org), methods=["GET"]),
            Route("/crm/{version}/{module}", g(self.crm_records), methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/crm/{version}/{module}/deleted", g(self.crm_deleted_records), methods=["GET"]),
            Route("/api/v3/portals", g(self.pm_portals), methods=["GET"]),
            Route("/api/v3/portal/{portal}/projects/{project}/tasks", g(self.pm_project_tasks), methods=["GET", "POST", "PATCH"]),
            Route("/api/v3/portal/{portal}/projects/{project}/tasks/{task}", g(self.pm_task), methods=["GET", "PATCH", "DELETE"]),
            Route("/api/v3/portal/{portal}/projects/{project}/tasks/{task}/comments", g(self.pm_comments), methods=["GET"]),
            Route("/api/v3/portal/{portal}/projects/{project}/{members:str}", g(self.pm_project_members), methods=["POST"]),
            Route("/api/v3/portal/{portal}/{kind:str}", g(self.pm_kind), methods=["GET", "POST"]),
            Route("/api/v3/portal/{portal}/{kind:str}/{rid:str}", g(self.pm_kind_record), methods=["GET", "PATCH", "DELETE"]),
            Route("/fake/config", self.fake_config, methods=["GET", "POST"]),
            Route("/fake/crm/{module}", self.fake_crm, methods=["GET", "POST"]),
            Route("/fake/pm/{kind}", self.fake_pm, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes)

    async def drain(self) -> None:
        """Wait until the notifications in flight were delivered."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


@contextlib.asynccontextmanager
async def serving(fake: FakeZoho, port: int = 0):  # type: ignore[no-untyped-def]
    """Serve the fake on 127.0.0.1 in this event loop; yields its base URL."""
    import socket

    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                          lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await fake.http.aclose()


DEMO_PORTAL = "700001"


def seed_demo(fake: FakeZoho) -> None:
    """What `make up ZOHO=fake` starts with: a CRM admin and an account; a Projects portal, its admin and a project."""
    fake.ui_crm_user({"id": "9000001", "email": "ada@example.com", "full_name": "Ada Admin", "profile": {"name": "Administrator"}})
    fake.ui_crm("Accounts", {"Account_Name": "Acme"})
    fake.portals[DEMO_PORTAL] = {"id": DEMO_PORTAL, "name": "Acme portal", "plan": "Enterprise"}
    fake.ui_pm("users", {"id": "pu-ada", "portal_id": DEMO_PORTAL, "email": "ada@example.com", "name": "Ada",
                         "role": {"name": "Administrator"}})
    fake.ui_pm("projects", {"portal_id": DEMO_PORTAL, "name": "Acme rollout", "owner": {"zpuid": "pu-ada"}, "status": "active",
                            "users": [{"zpuid": "pu-ada"}]})


def main() -> None:
    """`hub-fakezoho`: serve a fake Zoho on HUB_FAKEZOHO_PORT (default 8095), its tables in the SQLite file
    HUB_FAKEZOHO_DB (default: in memory). HUB_FAKEZOHO_CLIENT_ID, _CLIENT_SECRET and _REFRESH_TOKEN set the
    OAuth client it accepts; HUB_FAKEZOHO_SEED=demo seeds `seed_demo` into empty tables."""
    env = os.environ
    fake = FakeZoho(client_id=env.get("HUB_FAKEZOHO_CLIENT_ID", FakeZoho.client_id),
                    client_secret=env.get("HUB_FAKEZOHO_CLIENT_SECRET", FakeZoho.client_secret),
                    refresh_token=env.get("HUB_FAKEZOHO_REFRESH_TOKEN", FakeZoho.refresh_token),
                    db_path=env.get("HUB_FAKEZOHO_DB", ":memory:"))
    if env.get("HUB_FAKEZOHO_SEED") == "demo" and not len(fake.crm["Accounts"]):
        seed_demo(fake)
    uvicorn.run(fake.app(), host="127.0.0.1", port=int(env.get("HUB_FAKEZOHO_PORT", "8095")), log_level="warning")


if __name__ == "__main__":
    main()
