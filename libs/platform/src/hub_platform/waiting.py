"""Waiting for an `asyncio.Event` with a timeout, without losing a cancellation.

On Python 3.11, `asyncio.wait_for(event.wait(), t)` swallows a cancellation that arrives in the same loop turn as
the event is set (the inner wait has finished, so `wait_for` returns its result instead of raising): the task goes on
running, and whoever awaits its end on a stop waits for ever. Seen: the PM connector's poll loop, woken by a
webhook just as its service stopped, held the stop for good. `asyncio.timeout` has no such flaw.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True once `event` is set, False when `timeout` seconds passed first; a cancellation always propagates."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
