"""The two upstream tools as one org sees them, on one connection inside one transaction.

Every change goes through `World.save` / `World.delete`: it checks the tools'
invariants (unique client-user e-mails, one client company per contact), bumps
the record's `version`, stores it and publishes the change event in the same
transaction. Command handlers and the UI API (people, tests, `make demo`) use
the same path, so an echo of a hub command looks exactly like a person's change
except for its `command_id`. Only the publisher differs: a handler writes through
`ctx.emit` (causation from the command), the UI writes the outbox directly.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import asyncpg
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from hub_platform.outbox import write_outbox
from hub_platform.telemetry import current_trace_headers
from hub_schema import Envelope, Payload, encode, lookup, make_event, topics
from hub_schema.events.common import Versioned
from hub_schema.events.requests import Request
from hub_schema.topics import TopicNames
from hub_sandbox import domain, storage
from hub_sandbox.domain import Rejected
from hub_sandbox.kinds import VERSIONED_FIELDS, Kind, kind_of
from hub_sandbox.settings import SandboxSettings
from hub_sandbox.storage import Rec

UTC = timezone.utc

Publish = Callable[[Payload, str, str], Awaitable[Envelope]]
"""(payload, entity_key, origin) -> the envelope written to the outbox."""


class InvalidRecord(ValueError):
    """The record (or request) a person asked for does not validate: HTTP 422."""


class NotFound(LookupError):
    """The record does not exist (or was deleted): HTTP 404 / rejection not_found."""


def _first_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors(include_url=False)[:3])


def jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


def outbox_publisher(conn: asyncpg.Connection, settings: SandboxSettings, org_id: str) -> Publish:
    """How the UI publishes: envelope + outbox row in the caller's transaction (the relay sends it)."""
    names = TopicNames(settings.kafka.topic_prefix)

    async def publish(payload: Payload, entity_key: str, origin: str) -> Envelope:
        envelope = make_event(payload, org_id=org_id, entity_key=entity_key, producer=settings.service_name, origin=origin)  # type: ignore[arg-type]
        await write_outbox(conn, topic=names(type(payload).TOPIC), key=entity_key, value=encode(envelope),
                           headers=current_trace_headers(), event_id=envelope.event_id)
        return envelope

    return publish


class World:
    def __init__(self, conn: asyncpg.Connection, org_id: str, settings: SandboxSettings, publish: Publish, *,
                 command_id: uuid.UUID | None = None, acting_user_id: str | None = None) -> None:
        self.conn = conn
        self.org_id = org_id
        self.settings = settings
        self._publish = publish
        self.command_id = command_id
        self.acting_user_id = acting_user_id

    # -- reading -------------------------------------------------------------------------

    async def get(self, side: str, kind: str, record_id: str, *, live: bool = True) -> Rec | None:
        rec = await storage.get(self.conn, self.org_id, side, kind, record_id)
        return None if rec is None or (live and rec.deleted) else rec

    async def need(self, side: str, kind: str, record_id: str, **expect: Any) -> Rec:
        """A live record, else NotFound; `expect` are fields it must have (e.g. its portal_id)."""
        rec = await self.get(side, kind, record_id)
        if rec is None or any(rec.data.get(k) != v for k, v in expect.items()):
            where = "".join(f" with {k}={v!r}" for k, v in expect.items())
            raise NotFound(f"no {side} {kind.replace('_', ' ')} {record_id!r}{where}")
        return rec

    async def find(self, side: str, kind: str, *, include_deleted: bool = False, extra: dict[str, Any] | None = None,
                   **match: Any) -> list[Rec]:
        return await storage.find(self.conn, self.org_id, side, kind, match=jsonable(match), extra=extra, include_deleted=include_deleted)

    # -- writing -------------------------------------------------------------------------

    async def emit(self, payload: Payload, *, entity_key: str, origin: str) -> Envelope:
        envelope = await self._publish(payload, entity_key, origin)
        await storage.log_message(self.conn, org_id=self.org_id, what="event_emitted", side=origin, event_type=envelope.event_type,
                                  event_id=envelope.event_id, command_id=self.command_id, entity_key=entity_key)
        return envelope

    def _payload(self, model: type[Versioned], data: Mapping[str, Any], version: int, now: datetime) -> Versioned:
        body = {**data, "modified_at": now.isoformat(), "version": version, "acting_user_id": self.acting_user_id,
                "command_id": str(self.command_id) if self.command_id else None}
        try:
            return model.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            raise InvalidRecord(f"{model.EVENT_TYPE}: {_first_errors(exc)}") from None

    async def save(self, side: str, kind_name: str, fields: Mapping[str, Any], *, record_id: str | None = None,
                   extra: Mapping[str, Any] | None = None, must_exist: bool = False) -> Rec:
        """Create or change a record (fields not given keep their value) and publish its upsert event."""
        kind = kind_of(side, kind_name)
        fields = dict(jsonable(dict(fields)))
        record_id = record_id or fields.pop("id", None)
        fields.pop("id", None)
        unknown = set(fields) - kind.record_fields
        if unknown:
            raise InvalidRecord(f"{side} {kind.name} has no field(s) {sorted(unknown)}; fields: {sorted(kind.record_fields)}")
        if kind.name == "org":
            record_id = self.org_id
        existing = await storage.get(self.conn, self.org_id, side, kind.name, record_id, for_update=True) if record_id else None
        live = existing is not None and not existing.deleted
        if must_exist and not live:
            raise NotFound(f"no {side} {kind.name.replace('_', ' ')} {record_id!r}")
        if record_id is None:
            record_id = await storage.next_id(self.conn, side, kind.name)
        data = dict(existing.data) if live and existing else copy.deepcopy(kind.defaults)
        data.update(fields)
        data["id"] = record_id
        if "url" in kind.upserted.model_fields and not data.get("url"):
            data["url"] = self.record_url(side, kind.name, record_id)  # like a real CRM, each record has its page
        merged_extra = {**(existing.extra if existing else {}), **jsonable(dict(extra or {}))}
        await self._check_invariants(kind, data, existing if live else None, merged_extra)
        version = (existing.version if existing else 0) + 1
        now = datetime.now(UTC)
        payload = self._payload(kind.upserted, data, version, now)
        stored = payload.model_dump(mode="json", exclude=set(VERSIONED_FIELDS))
        rec = Rec(self.org_id, side, kind.name, record_id, version, False, now, stored, merged_extra)
        await storage.put(self.conn, rec)
        await self.emit(payload, entity_key=kind.entity_key(record_id), origin=side)
        return rec

    def record_url(self, side: str, kind_name: str, record_id: str) -> str:
        """The record's address in the sandbox's own HTTP API (what a CRM's record page is to a person)."""
        host = self.settings.http_host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.settings.http_port}/sandbox/{side}/{kind_name}/{record_id}"

    async def delete(self, side: str, kind_name: str, record_id: str) -> Rec:
        """Delete (CRM) / remove (PM) a record and publish its delete event; the revision goes on counting."""
        kind = kind_of(side, kind_name)
        if kind.deleted is None:
            raise InvalidRecord(f"{side} {kind.name} records cannot be deleted")
        existing = await storage.get(self.conn, self.org_id, side, kind.name, record_id, for_update=True)
        if existing is None or existing.deleted:
            raise NotFound(f"no {side} {kind.name.replace('_', ' ')} {record_id!r}")
        now = datetime.now(UTC)
        keys = set(kind.deleted.model_fields) - VERSIONED_FIELDS
        payload = self._payload(kind.deleted, {k: existing.data[k] for k in keys}, existing.version + 1, now)
        rec = replace(existing, version=existing.version + 1, deleted=True, modified_at=now)
        await storage.put(self.conn, rec)
        await self.emit(payload, entity_key=kind.entity_key(record_id), origin=side)
        return rec

    async def _check_invariants(self, kind: Kind, data: dict[str, Any], existing: Rec | None, extra: Mapping[str, Any]) -> None:
        """Rules a real tool enforces whoever makes the change (person or hub command)."""
        if (kind.side, kind.name) != ("pm", "client_user"):
            return
        contact_id = extra.get("crm_record_id") if extra.get("crm_record_type") == "contact" else None
        others = [r.data for r in await self.find("pm", "client_user", portal_id=data["portal_id"])]
        domain.check_client_user_email(data["email"], others, except_id=data["id"], crm_contact_id=contact_id)
        if contact_id is not None:
            same_contact = [r.data for r in await self.find("pm", "client_user", extra={"crm_record_type": "contact", "crm_record_id": contact_id})
                            if r.id != data["id"]]
            domain.check_one_company(contact_id, data["client_company_id"], same_contact)
        if existing is not None and existing.data["client_company_id"] != data["client_company_id"]:
            projects = await self.find("pm", "project", client_user_ids=[data["id"]])
            if projects:
                raise Rejected("invalid", f"client user {data['id']!r} is in project(s) of client company "
                               f"{existing.data['client_company_id']!r} and cannot move to another client company",
                               {"rule": "one_client_company", "projects": [p.id for p in projects]})

    # -- the UI: what a person can do ----------------------------------------------------

    async def lock(self, side: str, kind_name: str, record_id: str, locked: bool = True) -> Rec:
        """Lock a record against the integration's changes (commands are refused `locked`), or unlock it."""
        kind = kind_of(side, kind_name)
        if not await storage.set_locked(self.conn, self.org_id, side, kind.name, record_id, locked):
            raise NotFound(f"no {side} {kind.name.replace('_', ' ')} {record_id!r}")
        return await self.need(side, kind.name, record_id)

    async def ui_upsert(self, side: str, kind_name: str, fields: Mapping[str, Any]) -> Rec:
        """A person saves a record in the tool's UI; references must exist, omitted fields get the UI's defaults."""
        kind = kind_of(side, kind_name)
        f = dict(fields)
        record_id = f.pop("id", None)
        existing = await self.get(side, kind.name, record_id) if record_id else None
        creating = existing is None
        me = self.acting_user_id or self.settings.sandbox_integration_user_id
        if side == "pm" and kind.name != "portal" and "portal_id" in f:
            await self.need("pm", "portal", f["portal_id"])
        if (side, kind.name) == ("crm", "deal") and f.get("won") and "stage" not in f:
            f["stage"] = "Closed Won"
        if (side, kind.name) == ("crm", "task") and creating:
            f.setdefault("created_by", me)
        if (side, kind.name) in (("crm", "task"), ("crm", "note")) and "record_type" in f and "record_id" in f:
            await self.need("crm", f["record_type"], f["record_id"])
        if (side, kind.name) == ("crm", "note"):
            f.setdefault("author_id", me)
        if (side, kind.name) == ("pm", "project") and creating:
            f.setdefault("owner_id", me)
        if (side, kind.name) == ("pm", "task") and "project_id" in f:
            project = await self.need("pm", "project", f["project_id"])
            f.setdefault("portal_id", project.data["portal_id"])
        if (side, kind.name) == ("pm", "comment") and "task_id" in f:
            task = await self.need("pm", "task", f["task_id"])
            f.setdefault("portal_id", task.data["portal_id"])
            f.setdefault("project_id", task.data["project_id"])
            f.setdefault("author_id", me)
            f.setdefault("author_name", f["author_id"])
        if (side, kind.name) == ("pm", "client_user") and "client_company_id" in f:
            company = await self.need("pm", "client_company", f["client_company_id"])
            f.setdefault("portal_id", company.data["portal_id"])
        return await self.save(side, kind.name, f, record_id=record_id)

    async def ui_update(self, side: str, kind_name: str, record_id: str, changes: Mapping[str, Any]) -> Rec:
        await self.need(side, kind_name, record_id)
        return await self.ui_upsert(side, kind_name, {**changes, "id": record_id})

    async def request(self, request_type: str, fields: Mapping[str, Any]) -> Envelope:
        """A CRM user asks for something in the integration's UI: a hub.requests event."""
        model = lookup(request_type, None)
        if model is None or not issubclass(model, Request) or model.TOPIC != topics.HUB_REQUESTS:
            raise NotFound(f"no request type {request_type!r} on {topics.HUB_REQUESTS}")
        body = {"request_id": str(uuid.uuid4()), **jsonable(dict(fields))}
        if self.acting_user_id:
            body.setdefault("acting_user_id", self.acting_user_id)
        try:
            payload = model.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            raise InvalidRecord(f"{request_type}: {_first_errors(exc)}") from None
        return await self.emit(payload, entity_key=f"org:{self.org_id}", origin="crm")
