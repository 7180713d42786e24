"""The read API's queries (S2): what a CRM record's Projects tab and a project's record list show.

A disabled integration returns no links (S7): the filter is in both queries (state = enabled and the
link's portal is the current one), not in the callers.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def projects_of_record(conn: asyncpg.Connection, org_id: str, record_type: str, record_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT p.project_id, p.portal_id, p.name, p.status, p.progress_percent, p.owner_id, p.group_id,
                  l.changed_at AS linked_at
           FROM links l
           JOIN integrations i ON i.org_id = l.org_id AND i.state = 'enabled' AND i.portal_id = l.portal_id
           JOIN projects p ON p.org_id = l.org_id AND p.portal_id = l.portal_id AND p.project_id = l.project_id
                AND NOT p.deleted
           WHERE l.org_id = $1 AND l.record_type = $2 AND l.record_id = $3 AND l.active
           ORDER BY p.name, p.project_id""", org_id, record_type, record_id)
    return [dict(r) for r in rows]


async def records_of_project(conn: asyncpg.Connection, org_id: str, project_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT l.record_type, l.record_id, r.name, l.portal_id, l.changed_at AS linked_at
           FROM links l
           JOIN integrations i ON i.org_id = l.org_id AND i.state = 'enabled' AND i.portal_id = l.portal_id
           LEFT JOIN crm_records r ON r.org_id = l.org_id AND r.record_type = l.record_type
                AND r.record_id = l.record_id
           WHERE l.org_id = $1 AND l.project_id = $2 AND l.active
           ORDER BY l.record_type, l.record_id""", org_id, project_id)
    return [dict(r) for r in rows]
