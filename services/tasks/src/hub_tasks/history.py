"""CLI: print a task's sync history as JSON, read straight from the service's tables.

    python -m hub_tasks.history --hub-task-id UUID
    python -m hub_tasks.history --org-id ORG (--pm-task-id ID | --crm-task-id ID)

The database comes from the service's settings (HUB_DB__URL).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from hub_platform import db
from hub_tasks import storage
from hub_tasks.settings import TasksSettings


async def _run(args: argparse.Namespace) -> str:
    s = TasksSettings()
    pool = await db.create_pool(s.db.url.get_secret_value(), s.schema, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            if args.hub_task_id:
                rows = await storage.history_of_task(conn, uuid.UUID(args.hub_task_id))
            else:
                rows = await storage.history(conn, args.org_id, args.pm_task_id, args.crm_task_id)
    finally:
        await pool.close()
    return storage.dumps(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m hub_tasks.history", description=__doc__)
    ap.add_argument("--hub-task-id")
    ap.add_argument("--org-id")
    ap.add_argument("--pm-task-id")
    ap.add_argument("--crm-task-id")
    args = ap.parse_args(argv)
    if not args.hub_task_id and not (args.org_id and (args.pm_task_id or args.crm_task_id)):
        ap.error("give --hub-task-id, or --org-id with --pm-task-id or --crm-task-id")
    print(asyncio.run(_run(args)))


if __name__ == "__main__":
    main()
