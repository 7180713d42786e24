"""Named crash points for fault tests: HUB_FAILPOINT=<name> makes the process SIGKILL itself there
(`hit`), or wait there for ever (`stall`: a client library that never returns).

Only the fault and walking-skeleton tests set it; it costs one dict lookup otherwise.
"""

from __future__ import annotations

import asyncio
import os
import signal

_ACTIVE = frozenset(filter(None, os.environ.get("HUB_FAILPOINT", "").split(",")))


def hit(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)


async def stall(name: str) -> None:
    if name in _ACTIVE:
        await asyncio.Event().wait()
