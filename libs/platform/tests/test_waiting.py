"""`wait_event`: a loop waiting for a wake-up with a timeout stops when it is cancelled, even if the wake-up comes in
the same loop turn (a service's stop that meets a webhook, a commit's notification or an e-mail's wake-up)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hub_platform.waiting import wait_event


async def _woken_and_cancelled_together(wait: Callable[[asyncio.Event], Awaitable[object]]) -> str:
    """A background loop like the services' (wait, clear, go again) is woken and cancelled in one turn."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait(event)
            event.clear()

    task = asyncio.create_task(loop())
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is now waiting
    event.set()
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task), 2)
    except asyncio.CancelledError:
        return "stopped"
    except TimeoutError:
        task.cancel()
        return "still running"
    return "returned"


async def test_a_loop_woken_as_it_is_cancelled_stops() -> None:
    assert await _woken_and_cancelled_together(lambda e: wait_event(e, 3600)) == "stopped"


async def test_why_not_wait_for_it_swallows_that_cancellation_on_this_python() -> None:
    """What the helper is for (Python 3.11's `wait_for`); should a Python version fix it, this fails and says so."""

    async def with_wait_for(event: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(event.wait(), 3600)
        except TimeoutError:
            pass

    assert await _woken_and_cancelled_together(with_wait_for) == "still running", \
        "asyncio.wait_for no longer swallows the cancellation: wait_event could become wait_for again"


@pytest.mark.parametrize(("set_it", "expected"), [(True, True), (False, False)])
async def test_it_says_whether_the_event_came_or_the_time_ran_out(set_it: bool, expected: bool) -> None:
    event = asyncio.Event()
    if set_it:
        asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 0.2) is expected
