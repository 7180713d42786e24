"""Handlers roll part of their work back only through `HandlerContext.savepoint()` (issue 16).

A bare `conn.transaction()` in a handler undoes its rows but not the events it emitted on the optimistic
batch path (they wait in the batch's outbox list), so a refused request would still publish them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_handler_opens_its_own_transaction() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{n}"
                 for path in sorted(ROOT.glob("services/*/src/*/handlers.py")) + sorted(ROOT.glob("services/*/src/*/handlers/**/*.py"))
                 + [ROOT / "libs/platform/src/hub_platform/echo.py"]
                 for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\.transaction\(", line)]
    assert offenders == [], "use `async with ctx.savepoint():` instead"
