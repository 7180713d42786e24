"""Event handlers of the linking service, split by aggregate, registered by payload class on one router.

The router loads a `LinkingState` per batch (see `hub_linking.state`): upstream copies and won deals are handled
on it set-based; request handlers write it through and work on the database. A handler called on its own,
outside a BatchProcessor (the bench's direct-database baseline, `bench.statements`), gets a state of its own
event, flushed when it returns.
"""

from __future__ import annotations

from typing import Any

from hub_linking.handlers import associations, deals, projections, settings
from hub_linking.state import LinkingState
from hub_platform.consumer import Handler, HandlerContext, Router
from hub_schema import Event

router = Router(state=LinkingState.load)
for part in (projections, deals, settings, associations):
    router.include(part.router)


def _with_own_state(handler: Handler) -> Handler:
    async def run(ctx: HandlerContext, event: Event[Any]) -> None:
        if ctx.state is not None:
            await handler(ctx, event)
            return
        ctx.state = await LinkingState.load(ctx.conn, [event])
        await handler(ctx, event)
        await ctx.state.flush(ctx.conn)

    return run


router.handlers = {event_type: _with_own_state(fn) for event_type, fn in router.handlers.items()}

__all__ = ["router"]
