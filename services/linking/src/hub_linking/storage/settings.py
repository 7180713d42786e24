"""SQL of the integration's settings, the users projection and service keys."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from hub_linking import rows
from hub_linking.domain import pm_value_type
from hub_linking.storage.tables import INTEGRATIONS, PORTALS, USERS, load_rows, row_of


async def get_integration(conn: asyncpg.Connection, org_id: str, *, lock: bool = False) -> rows.Integration | None:
    sql = f"SELECT {', '.join(INTEGRATIONS.columns)} FROM integrations WHERE org_id = $1" + (" FOR UPDATE" if lock else "")
    r = await conn.fetchrow(sql, org_id)
    return row_of(INTEGRATIONS, r) if r is not None else None


async def save_integration(conn: asyncpg.Connection, org_id: str, *, state: str, portal_id: str,
                           field_mapping: list[dict[str, Any]], deal_won_creates_project: bool, enabled_by: str) -> None:
    await conn.execute(
        """INSERT INTO integrations (org_id, state, portal_id, field_mapping, deal_won_creates_project, enabled_by,
                                     revision)
           VALUES ($1, $2, $3, $4, $5, $6, 1)
           ON CONFLICT (org_id) DO UPDATE SET state = EXCLUDED.state, portal_id = EXCLUDED.portal_id,
               field_mapping = EXCLUDED.field_mapping,
               deal_won_creates_project = EXCLUDED.deal_won_creates_project, enabled_by = EXCLUDED.enabled_by,
               revision = integrations.revision + 1, changed_at = now()""",
        org_id, state, portal_id, field_mapping, deal_won_creates_project, enabled_by,
    )


async def disable_integration(conn: asyncpg.Connection, org_id: str) -> None:
    await conn.execute(
        "UPDATE integrations SET state = 'disabled', revision = revision + 1, changed_at = now() WHERE org_id = $1",
        org_id)


async def switch_portal(conn: asyncpg.Connection, org_id: str, portal_id: str, by: str) -> None:
    await conn.execute(
        """UPDATE integrations SET portal_id = $2, enabled_by = $3, revision = revision + 1, changed_at = now()
           WHERE org_id = $1""", org_id, portal_id, by)


async def mark_matched(conn: asyncpg.Connection, org_id: str, portal_id: str) -> None:
    await conn.execute(
        """UPDATE integrations SET matched_portals = matched_portals || to_jsonb($2::text)
           WHERE org_id = $1 AND NOT matched_portals ? $2""", org_id, portal_id)


async def get_actor(conn: asyncpg.Connection, org_id: str, crm_user_id: str) -> rows.User | None:
    found = await load_rows(conn, USERS, [(org_id, crm_user_id)])
    return found[0] if found else None


async def get_users(conn: asyncpg.Connection, org_id: str, crm_user_ids: list[str]) -> dict[str, rows.User]:
    found = await load_rows(conn, USERS, [(org_id, u) for u in set(crm_user_ids)])
    return {u.crm_user_id: u for u in found}


async def get_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> rows.Portal | None:
    found = await load_rows(conn, PORTALS, [(org_id, portal_id)])
    return found[0] if found else None


async def custom_fields(conn: asyncpg.Connection, org_id: str) -> dict[tuple[str, str], str]:
    found = await conn.fetch("SELECT module, field, value_kind FROM crm_custom_fields WHERE org_id = $1", org_id)
    return {(r["module"], r["field"]): r["value_kind"] for r in found}


async def pm_custom_types(conn: asyncpg.Connection, org_id: str, portal_id: str) -> dict[str, str]:
    out: dict[str, str] = {}
    found = await conn.fetch("SELECT custom_fields FROM projects WHERE org_id = $1 AND portal_id = $2 AND NOT deleted "
                             "ORDER BY project_id", org_id, portal_id)
    for r in found:
        for k, v in (r["custom_fields"] or {}).items():
            if v is not None:
                out.setdefault(k, pm_value_type(v))
    return out


async def store_service_key(conn: asyncpg.Connection, org_id: str, key_id: uuid.UUID, sha256: str, by: str) -> None:
    """Replace the org's key: the old one stops matching in the same commit (S24)."""
    await conn.execute(
        """INSERT INTO service_keys (org_id, key_id, key_sha256, created_by) VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id) DO UPDATE SET key_id = EXCLUDED.key_id, key_sha256 = EXCLUDED.key_sha256,
               created_by = EXCLUDED.created_by, created_at = now()""",
        org_id, key_id, sha256, by)

