"""The history API's own query (the decisions themselves come from storage)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def mapping_of_org(conn: asyncpg.Connection, hub_task_id: uuid.UUID, org_id: str | None) -> dict[str, Any] | None:
    """The task's mapping if it belongs to `org_id` (another org's task is as good as missing)."""
    row = await conn.fetchrow(
        "SELECT org_id, pm_task_id, crm_task_id, record_type, record_id FROM task_mappings "
        "WHERE hub_task_id = $1 AND org_id = $2", hub_task_id, org_id)
    return dict(row) if row is not None else None
