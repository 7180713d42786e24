"""Emitting events from outside a handler (an HTTP request, a poll): the outbox, in the caller's transaction.

A handler emits through its HandlerContext; everything else that publishes goes through `Emitter`, so the
event is written with the state change it announces (one transaction) and stamped the same way: the service
as producer, the org, a correlation id (the request's `X-Correlation-Id` when it sent a valid one), the
trace context in the headers. The relay publishes it after the commit; `emitting` wakes the relay then.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from hub_platform.outbox import write_outbox
from hub_platform.telemetry import current_trace_headers
from hub_schema import Payload, encode, make_event
from hub_schema.envelope import Envelope, Origin
from hub_schema.topics import TopicNames

CORRELATION_HEADER = "x-correlation-id"


class Emitter:
    """Writes events to the outbox on `conn` (inside its transaction), as `producer`."""

    def __init__(self, conn: asyncpg.Connection, *, producer: str, topics: TopicNames, origin: Origin = "hub",
                 correlation_id: uuid.UUID | None = None) -> None:
        self.conn, self.producer, self.topics, self.origin = conn, producer, topics, origin
        self.correlation_id = correlation_id

    async def emit(self, payload: Payload, *, org_id: str, entity_key: str, event_id: uuid.UUID | None = None,
                   causation_id: uuid.UUID | None = None, origin: Origin | None = None) -> Envelope:
        envelope = make_event(payload, org_id=org_id, entity_key=entity_key, producer=self.producer,
                              origin=origin or self.origin, correlation_id=self.correlation_id,
                              causation_id=causation_id, event_id=event_id)
        await write_outbox(self.conn, topic=self.topics(type(payload).TOPIC), key=entity_key, value=encode(envelope),
                           headers=current_trace_headers(), event_id=envelope.event_id)
        return envelope


def correlation_id_of(headers: Any) -> uuid.UUID | None:
    """The caller's `X-Correlation-Id` when it is a UUID (anything else is ignored: a new chain starts)."""
    raw = headers.get(CORRELATION_HEADER) if headers is not None else None
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None


@contextlib.asynccontextmanager
async def emitting(service: Any, *, correlation_id: uuid.UUID | None = None,
                   origin: Origin = "hub") -> AsyncIterator[Emitter]:
    """A connection in a transaction and an Emitter on it; the relay is woken once the transaction committed.

    `service` is the running HubService (its pool, name, topics and relay)."""
    async with service.pool.acquire() as conn:
        async with conn.transaction():
            yield Emitter(conn, producer=service.name, topics=service.topics, origin=origin,
                          correlation_id=correlation_id)
    service.relay.wake()
