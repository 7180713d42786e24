""""A user acting in the UI" of the sandbox CRM and PM tool: for tests, `make demo` and people.

Two clients with the same methods:
- `SandboxClient(pool, settings)` works in-process on the sandbox's database: the
  record and its change event (outbox row) are written in one transaction; the
  running sandbox's relay publishes it (pass `on_commit=service.relay.wake` to
  publish at once, or use `SandboxClient.of(service)`).
- `SandboxHttpClient(base_url)` does the same through the sandbox's HTTP API.

`client.crm.upsert_deal(won=True, ...)`, `client.pm.update_task(id, status="closed")`,
`client.request("hub.integration.enable", ...)`: omitted fields keep their value
(or get the UI's default on creation); the version goes up by one per change.
A refusal of the tool (S19 duplicate e-mail, ...) raises `Rejected`; a missing
record `NotFound`; a record that does not validate `InvalidRecord`.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
import httpx

from hub_platform import db
from hub_sandbox import storage
from hub_sandbox.domain import Rejected
from hub_sandbox.settings import SandboxSettings
from hub_sandbox.world import InvalidRecord, NotFound, World, jsonable, outbox_publisher

T = TypeVar("T")
Record = dict[str, Any]

__all__ = ["CrmUi", "InvalidRecord", "NotFound", "PmUi", "Rejected", "SandboxClient", "SandboxHttpClient"]


def _fields(id: str | None, fields: Mapping[str, Any], **flags: Any) -> dict[str, Any]:
    out = dict(fields)
    if id is not None:
        out["id"] = id
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


class _Client:
    """What both clients share: the per-side facades and the generic calls they are made of."""

    org_id: str
    acting_user_id: str | None

    def __init__(self) -> None:
        self.crm = CrmUi(self)
        self.pm = PmUi(self)

    def as_user(self, acting_user_id: str | None) -> Any:
        """The same client acting as another upstream user (`acting_user_id` on the events)."""
        other = copy.copy(self)
        other.acting_user_id = acting_user_id
        other.crm, other.pm = CrmUi(other), PmUi(other)
        return other

    def for_org(self, org_id: str) -> Any:
        other = copy.copy(self)
        other.org_id = org_id
        other.crm, other.pm = CrmUi(other), PmUi(other)
        return other

    async def upsert(self, side: str, kind: str, fields: Mapping[str, Any]) -> Record:
        raise NotImplementedError

    async def update(self, side: str, kind: str, record_id: str, changes: Mapping[str, Any]) -> Record:
        raise NotImplementedError

    async def delete(self, side: str, kind: str, record_id: str) -> Record:
        raise NotImplementedError

    async def get(self, side: str, kind: str, record_id: str) -> Record | None:
        raise NotImplementedError

    async def list(self, side: str, kind: str, *, include_deleted: bool = False) -> list[Record]:
        raise NotImplementedError

    async def request(self, request_type: str, **fields: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def lock(self, side: str, kind: str, record_id: str, locked: bool = True) -> Record:
        raise NotImplementedError

    async def counters(self, *, all_orgs: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    async def log(self, limit: int = 200) -> list[dict[str, Any]]:
        raise NotImplementedError


class SandboxClient(_Client):
    """In-process: straight to the sandbox schema through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, settings: SandboxSettings | None = None, *, org_id: str | None = None,
                 acting_user_id: str | None = None, on_commit: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self.settings = settings or SandboxSettings()
        self.org_id = org_id or self.settings.sandbox_default_org_id
        self.acting_user_id = acting_user_id
        self.on_commit = on_commit or (lambda: None)
        self._owned = False
        super().__init__()

    @classmethod
    def of(cls, service: Any, **kwargs: Any) -> SandboxClient:
        """The client of a started sandbox HubService (its pool; its relay is woken after each change)."""
        assert service.pool is not None, "start the sandbox first"
        return cls(service.pool, service.settings, on_commit=service.relay.wake, **kwargs)

    @classmethod
    async def connect(cls, settings: SandboxSettings | None = None, dsn: str | None = None, **kwargs: Any) -> SandboxClient:
        """Own pool on the sandbox schema (the sandbox service must run to relay the outbox). Close with `close()`."""
        settings = settings or SandboxSettings()
        pool = await db.create_pool(dsn or settings.db.url.get_secret_value(), settings.schema)
        client = cls(pool, settings, **kwargs)
        client._owned = True
        return client

    async def close(self) -> None:
        if self._owned:
            await self.pool.close()

    async def _write(self, op: Callable[[World], Awaitable[T]]) -> T:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await storage.lock_org(conn, self.org_id)
                world = World(conn, self.org_id, self.settings, outbox_publisher(conn, self.settings, self.org_id),
                              acting_user_id=self.acting_user_id)
                result = await op(world)
        self.on_commit()
        return result

    async def upsert(self, side: str, kind: str, fields: Mapping[str, Any]) -> Record:
        return (await self._write(lambda w: w.ui_upsert(side, kind, fields))).as_json()

    async def update(self, side: str, kind: str, record_id: str, changes: Mapping[str, Any]) -> Record:
        return (await self._write(lambda w: w.ui_update(side, kind, record_id, changes))).as_json()

    async def upsert_many(self, side: str, kind: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Save many records of one kind in one transaction (seeding a large org in a test); each is an event."""
        async def save_all(w: World) -> int:
            for fields in records:
                await w.ui_upsert(side, kind, fields)
            return len(records)

        return await self._write(save_all)

    async def delete(self, side: str, kind: str, record_id: str) -> Record:
        return (await self._write(lambda w: w.delete(side, kind, record_id))).as_json()

    async def get(self, side: str, kind: str, record_id: str) -> Record | None:
        from hub_sandbox.kinds import kind_of

        kind_of(side, kind)
        async with self.pool.acquire() as conn:
            rec = await storage.get(conn, self.org_id, side, kind, record_id)
        return rec.as_json() if rec else None

    async def list(self, side: str, kind: str, *, include_deleted: bool = False) -> list[Record]:
        from hub_sandbox.kinds import kind_of

        kind_of(side, kind)
        async with self.pool.acquire() as conn:
            return [r.as_json() for r in await storage.find(conn, self.org_id, side, kind, include_deleted=include_deleted)]

    async def lock(self, side: str, kind: str, record_id: str, locked: bool = True) -> Record:
        return (await self._write(lambda w: w.lock(side, kind, record_id, locked))).as_json()

    async def request(self, request_type: str, **fields: Any) -> dict[str, Any]:
        env = await self._write(lambda w: w.request(request_type, fields))
        return {"event_type": env.event_type, "event_id": str(env.event_id), "request_id": env.payload["request_id"],
                "payload": env.payload}

    async def counters(self, *, all_orgs: bool = False) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            return await storage.counters(conn, None if all_orgs else self.org_id)

    async def log(self, limit: int = 200) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            return await storage.message_log(conn, self.org_id, limit)


class SandboxHttpClient(_Client):
    """The same through the sandbox's HTTP API (what `make demo` uses)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8090", *, org_id: str = "org-1", acting_user_id: str | None = None,
                 http: httpx.AsyncClient | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.org_id = org_id
        self.acting_user_id = acting_user_id
        self.http = http or httpx.AsyncClient(timeout=timeout)
        super().__init__()

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> SandboxHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _params(self, **more: Any) -> dict[str, str]:
        params = {"org_id": self.org_id, **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in more.items() if v is not None}}
        if self.acting_user_id:
            params["acting_user_id"] = self.acting_user_id
        return params

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None, **params: Any) -> Any:
        resp = await self.http.request(method, f"{self.base_url}{path}", params=self._params(**params),
                                       json=jsonable(dict(body)) if body is not None else None)
        if resp.status_code < 300:
            return resp.json()
        try:
            err = resp.json()
        except ValueError:
            err = {"error": resp.text}
        if resp.status_code == 409:
            raise Rejected(err.get("reason_code", "other"), err.get("reason", ""), err.get("details"))
        if resp.status_code == 404:
            raise NotFound(err.get("detail") or err.get("error", resp.text))
        if resp.status_code in (400, 422):
            raise InvalidRecord(err.get("detail") or err.get("error", resp.text))
        resp.raise_for_status()
        return None

    async def upsert(self, side: str, kind: str, fields: Mapping[str, Any]) -> Record:
        return await self._call("POST", f"/sandbox/{side}/{kind}", fields)

    async def update(self, side: str, kind: str, record_id: str, changes: Mapping[str, Any]) -> Record:
        return await self._call("PATCH", f"/sandbox/{side}/{kind}/{record_id}", changes)

    async def delete(self, side: str, kind: str, record_id: str) -> Record:
        return await self._call("DELETE", f"/sandbox/{side}/{kind}/{record_id}")

    async def get(self, side: str, kind: str, record_id: str) -> Record | None:
        try:
            return await self._call("GET", f"/sandbox/{side}/{kind}/{record_id}")
        except NotFound:
            return None

    async def list(self, side: str, kind: str, *, include_deleted: bool = False) -> list[Record]:
        return (await self._call("GET", f"/sandbox/{side}/{kind}", include_deleted=include_deleted))["records"]

    async def lock(self, side: str, kind: str, record_id: str, locked: bool = True) -> Record:
        return await self._call("POST", f"/sandbox/{side}/{kind}/{record_id}/lock", {"locked": locked})

    async def request(self, request_type: str, **fields: Any) -> dict[str, Any]:
        return await self._call("POST", f"/sandbox/requests/{request_type}", fields)

    async def counters(self, *, all_orgs: bool = False) -> dict[str, Any]:
        return await self._call("GET", "/sandbox/counters", all_orgs=all_orgs or None)

    async def log(self, limit: int = 200) -> list[dict[str, Any]]:
        return (await self._call("GET", "/sandbox/log", limit=limit))["messages"]


class CrmUi:
    """The sandbox CRM's UI: records as a CRM user saves them."""

    def __init__(self, client: _Client) -> None:
        self._c = client

    async def upsert_org(self, **fields: Any) -> Record:
        return await self._c.upsert("crm", "org", fields)

    async def upsert_user(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("crm", "user", _fields(id, fields))

    async def deactivate_user(self, id: str) -> Record:
        return await self._c.delete("crm", "user", id)

    async def upsert_account(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("crm", "account", _fields(id, fields))

    async def upsert_contact(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("crm", "contact", _fields(id, fields))

    async def upsert_deal(self, id: str | None = None, *, won: bool | None = None, **fields: Any) -> Record:
        return await self._c.upsert("crm", "deal", _fields(id, fields, won=won))

    async def upsert_lead(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("crm", "lead", _fields(id, fields))

    async def upsert_task(self, id: str | None = None, *, add_to_pm: bool | None = None, **fields: Any) -> Record:
        return await self._c.upsert("crm", "task", _fields(id, fields, add_to_pm=add_to_pm))

    async def update_task(self, id: str, **changes: Any) -> Record:
        return await self._c.update("crm", "task", id, changes)

    async def lock_task(self, id: str, locked: bool = True) -> Record:
        """Lock the task against the integration's changes (a person can still edit it)."""
        return await self._c.lock("crm", "task", id, locked)

    async def add_note(self, **fields: Any) -> Record:
        return await self._c.upsert("crm", "note", fields)

    async def delete(self, kind: str, id: str) -> Record:
        return await self._c.delete("crm", kind, id)

    async def get(self, kind: str, id: str) -> Record | None:
        return await self._c.get("crm", kind, id)

    async def list(self, kind: str, *, include_deleted: bool = False) -> list[Record]:
        return await self._c.list("crm", kind, include_deleted=include_deleted)


class PmUi:
    """The sandbox PM tool's UI."""

    def __init__(self, client: _Client) -> None:
        self._c = client

    async def upsert_portal(self, id: str | None = None, *, plan: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("pm", "portal", _fields(id, fields, plan=plan))

    async def upsert_portal_user(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("pm", "portal_user", _fields(id, fields))

    async def upsert_client_company(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("pm", "client_company", _fields(id, fields))

    async def upsert_client_user(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("pm", "client_user", _fields(id, fields))

    async def upsert_project_group(self, id: str | None = None, **fields: Any) -> Record:
        return await self._c.upsert("pm", "project_group", _fields(id, fields))

    async def upsert_project(self, id: str | None = None, *, schedule_fixed: bool | None = None, **fields: Any) -> Record:
        return await self._c.upsert("pm", "project", _fields(id, fields, schedule_fixed=schedule_fixed))

    async def update_project(self, id: str, **changes: Any) -> Record:
        return await self._c.update("pm", "project", id, changes)

    async def upsert_task(self, id: str | None = None, *, add_to_crm: bool | None = None, recurring: bool | None = None,
                          **fields: Any) -> Record:
        return await self._c.upsert("pm", "task", _fields(id, fields, add_to_crm=add_to_crm, recurring=recurring))

    async def update_task(self, id: str, **changes: Any) -> Record:
        return await self._c.update("pm", "task", id, changes)

    async def lock_task(self, id: str, locked: bool = True) -> Record:
        """Lock the task against the integration's changes (a person can still edit it)."""
        return await self._c.lock("pm", "task", id, locked)

    async def add_comment(self, **fields: Any) -> Record:
        return await self._c.upsert("pm", "comment", fields)

    async def delete(self, kind: str, id: str) -> Record:
        return await self._c.delete("pm", kind, id)

    async def get(self, kind: str, id: str) -> Record | None:
        return await self._c.get("pm", kind, id)

    async def list(self, kind: str, *, include_deleted: bool = False) -> list[Record]:
        return await self._c.list("pm", kind, include_deleted=include_deleted)
