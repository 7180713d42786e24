"""A minimal service on the platform: ping in, row + pong out. The walking skeleton and baselines use it.

Run it as a process with `python -m hub_platform.echo` (settings from the environment).
"""

from __future__ import annotations

from pathlib import Path

from hub_platform.consumer import HandlerContext, PermanentError, Router
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import Event, topics
from hub_schema.events.diagnostics import DiagPing, DiagPong

router = Router()


@router.on("diag.ping")
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
    await ctx.conn.execute(
        "INSERT INTO echo_pings (event_id, seq, entity_key) VALUES ($1, $2, $3)",
        event.event_id, event.payload.seq, event.envelope.entity_key,
    )
    await ctx.emit(DiagPong(seq=event.payload.seq, ping_event_id=str(event.event_id)), entity_key=event.envelope.entity_key)


class EchoSettings(ServiceSettings):
    service_name: str = "echo"


def build(settings: ServiceSettings | None = None) -> HubService:
    return HubService(settings or EchoSettings(), router, subscribe=[topics.CRM_INGEST],
                      migrations=Path(__file__).parent / "echo_migrations", emits=[DiagPong],
                      title="hub echo (diagnostics)")


if __name__ == "__main__":
    build().run()
