"""SQL of the links (S4, S16, S20) and of the commands awaiting their echo (S9, S14, S19)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from hub_linking import rows
from hub_linking.storage.tables import insert_pending

LinkKey = tuple[str, str, str]
"""(project_id, record_type, record_id) within one org and portal."""


async def set_links(conn: asyncpg.Connection, org_id: str, portal_id: str, links: Sequence[LinkKey], *, active: bool,
                    source: str) -> dict[LinkKey, int]:
    """Link or unlink; the new revision of each link that changed (one that already was so is left out)."""
    if not links:
        return {}
    cols = ([p for p, _, _ in links], [t for _, t, _ in links], [r for _, _, r in links])
    if active:
        found = await conn.fetch(
            """INSERT INTO links (org_id, portal_id, project_id, record_type, record_id, active, revision, source)
               SELECT $1, $2, p, t, r, true, 1, $6 FROM unnest($3::text[], $4::text[], $5::text[]) AS u(p, t, r)
               ON CONFLICT (org_id, portal_id, project_id, record_type, record_id) DO UPDATE
                   SET active = true, revision = links.revision + 1, source = EXCLUDED.source, changed_at = now()
                   WHERE NOT links.active
               RETURNING project_id, record_type, record_id, revision""",
            org_id, portal_id, *cols, source)
    else:
        found = await conn.fetch(
            """UPDATE links l SET active = false, revision = l.revision + 1, source = $6, changed_at = now()
               FROM unnest($3::text[], $4::text[], $5::text[]) AS u(p, t, r)
               WHERE l.org_id = $1 AND l.portal_id = $2 AND l.project_id = u.p AND l.record_type = u.t
                 AND l.record_id = u.r AND l.active
               RETURNING l.project_id, l.record_type, l.record_id, l.revision""",
            org_id, portal_id, *cols, source)
    return {(r["project_id"], r["record_type"], r["record_id"]): r["revision"] for r in found}


async def is_linked(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str, record_type: str,
                    record_id: str) -> bool:
    return bool(await conn.fetchval(
        """SELECT active FROM links WHERE org_id = $1 AND portal_id = $2 AND project_id = $3 AND record_type = $4
           AND record_id = $5""", org_id, portal_id, project_id, record_type, record_id))


async def active_links_of_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[LinkKey]:
    found = await conn.fetch(
        """SELECT project_id, record_type, record_id FROM links WHERE org_id = $1 AND portal_id = $2 AND active
           ORDER BY project_id, record_type, record_id""", org_id, portal_id)
    return [(r["project_id"], r["record_type"], r["record_id"]) for r in found]


async def linked_project_ids(conn: asyncpg.Connection, org_id: str, portal_id: str, record_type: str,
                             record_id: str) -> set[str]:
    found = await conn.fetch(
        """SELECT project_id FROM links WHERE org_id = $1 AND portal_id = $2 AND record_type = $3 AND record_id = $4
           AND active""", org_id, portal_id, record_type, record_id)
    return {r["project_id"] for r in found}


async def add_pending(conn: asyncpg.Connection, commands: Sequence[rows.PendingCommand]) -> None:
    """Commands whose echo the hub will wait for, in one round trip."""
    await insert_pending(conn, commands)


async def take_pending(conn: asyncpg.Connection, org_id: str, command_id: uuid.UUID | None,
                       kind: str | None) -> rows.PendingCommand | None:
    """The pending command this echo answers (once: it is marked done); only `org_id`'s, so an echo naming
    another org's command finds nothing. `kind` None: whatever kind it is (a refusal ends any command)."""
    if command_id is None:
        return None
    r = await conn.fetchrow(
        "UPDATE pending_commands SET done = true WHERE org_id = $1 AND command_id = $2 AND ($3::text IS NULL OR kind = $3) "
        "AND NOT done RETURNING command_id, org_id, kind, portal_id, data", org_id, command_id, kind)
    return rows.PendingCommand(**dict(r)) if r is not None else None
