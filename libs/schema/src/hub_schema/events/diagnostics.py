"""Diagnostic events: the platform's walking skeleton, health probes and benchmarks use them."""

from __future__ import annotations

from pydantic import Field

from hub_schema import topics
from hub_schema.registry import Payload, event


@event("diag.ping", topic=topics.CRM_INGEST)
class DiagPing(Payload):
    """Asks the diagnostic echo service to record a row and answer with a pong."""

    seq: int = Field(ge=0)
    note: str = Field("", max_length=2000)


@event("diag.pong", topic=topics.TASKS_EVENTS)
class DiagPong(Payload):
    """The echo of one ping, published through the outbox."""

    seq: int = Field(ge=0)
    ping_event_id: str
