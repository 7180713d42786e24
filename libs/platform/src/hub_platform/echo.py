"""A minimal service on the platform: ping in, row + pong out. The walking skeleton and baselines use it.

It is also the smallest example of a set-based service (issue 16): its `Router(state=...)` gives every batch
one `EchoPings` state, the handler only appends to it in memory, and `flush` writes the batch's ping rows with
one `INSERT … SELECT FROM unnest(…)` before the platform writes the outbox (same transaction). The careful
path (one savepoint per event, after a handler raised) runs the same handler on a state of one event.

Run it as a process with `python -m hub_platform.echo` (settings from the environment).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from hub_platform.consumer import HandlerContext, PermanentError, Router
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import Event, topics
from hub_schema.events.diagnostics import DiagPing, DiagPong


@dataclass(frozen=True)
class PingRow:
    event_id: uuid.UUID
    seq: int
    entity_key: str


@dataclass
class EchoPings:
    """The batch's new `echo_pings` rows. Pings are never read back, so loading is free: the inbox has already
    kept out every ping handled before, and a new ping's row cannot exist yet."""

    rows: list[PingRow] = field(default_factory=list)

    @classmethod
    async def load(cls, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> EchoPings:
        return cls()

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.rows:
            await conn.execute(
                "INSERT INTO echo_pings (event_id, seq, entity_key) "
                "SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[])",
                [r.event_id for r in self.rows], [r.seq for r in self.rows], [r.entity_key for r in self.rows])

    def snapshot(self) -> int:
        return len(self.rows)

    def restore(self, snapshot: int) -> None:
        del self.rows[snapshot:]


router = Router(state=EchoPings.load)


@router.on(DiagPing)
async def on_ping(ctx: HandlerContext, event: Event[DiagPing]) -> None:
    # Diagnostic pings can ask to fail, so the dead-letter paths can be exercised end to end.
    if event.payload.note == "reject":
        raise PermanentError("the ping asked to be rejected", code="rejected_by_request")
    if event.payload.note == "crash":
        raise RuntimeError("the ping asked the handler to crash")
    if event.payload.note == "stall":
        await ctx.conn.execute("SELECT pg_sleep(3600)")  # a statement that never finishes (statement_timeout ends it)
    if event.payload.note == "undo":  # a refusal part-way: the row and the pong begun in the savepoint go
        try:
            async with ctx.savepoint():
                await record_and_answer(ctx, event)
                raise ChangedMind("the ping asked to be undone after its row and pong")
        except ChangedMind:
            return
    await record_and_answer(ctx, event)


class ChangedMind(Exception):
    """Raised inside a savepoint by a ping with note "undo"."""


async def record_and_answer(ctx: HandlerContext, event: Event[DiagPing]) -> None:
    state: EchoPings = ctx.state
    state.rows.append(PingRow(event.event_id, event.payload.seq, event.envelope.entity_key))
    await ctx.emit(DiagPong(seq=event.payload.seq, ping_event_id=str(event.event_id)), entity_key=event.envelope.entity_key)


class EchoSettings(ServiceSettings):
    service_name: str = "echo"


def build(settings: ServiceSettings | None = None) -> HubService:
    return HubService(settings or EchoSettings(), router, subscribe=[topics.CRM_INGEST],
                      migrations=Path(__file__).parent / "echo_migrations", emits=[DiagPong],
                      title="hub echo (diagnostics)")


if __name__ == "__main__":
    build().run()
