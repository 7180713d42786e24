"""SQL of the linking service, on an asyncpg connection (the handler's transaction or a pool connection).

Upstream copies are written with `upsert_versioned`: a row changes only when the
incoming upstream `version` is newer than the stored one, so stale and
out-of-order events are dropped in one statement, without a read first.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from hub_linking.domain import Actor


async def upsert_versioned(conn: asyncpg.Connection, table: str, keys: dict[str, Any], values: dict[str, Any],
                           version: int, version_col: str = "version") -> bool:
    """Insert or update a copy of an upstream record if `version` is newer; True when applied."""
    cols = [*keys, *values, version_col]
    params = [*keys.values(), *values.values(), version]
    placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*values, version_col])
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders}) "
           f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
           f"WHERE {table}.{version_col} < EXCLUDED.{version_col} RETURNING true")
    return bool(await conn.fetchval(sql, *params))


# --- integration -------------------------------------------------------------------------------


async def get_integration(conn: asyncpg.Connection, org_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    sql = "SELECT * FROM integrations WHERE org_id = $1" + (" FOR UPDATE" if lock else "")
    return await conn.fetchrow(sql, org_id)


async def save_integration(conn: asyncpg.Connection, org_id: str, *, state: str, portal_id: str,
                           field_mapping: list[dict[str, Any]], permissions: dict[str, Any],
                           deal_won_creates_project: bool, enabled_by: str) -> int:
    """Write the settings; returns the new revision."""
    return await conn.fetchval(
        """INSERT INTO integrations (org_id, state, portal_id, field_mapping, permissions, deal_won_creates_project,
                                     enabled_by, revision)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
           ON CONFLICT (org_id) DO UPDATE SET state = EXCLUDED.state, portal_id = EXCLUDED.portal_id,
               field_mapping = EXCLUDED.field_mapping, permissions = EXCLUDED.permissions,
               deal_won_creates_project = EXCLUDED.deal_won_creates_project, enabled_by = EXCLUDED.enabled_by,
               revision = integrations.revision + 1, changed_at = now()
           RETURNING revision""",
        org_id, state, portal_id, field_mapping, permissions, deal_won_creates_project, enabled_by,
    )


async def mark_matched(conn: asyncpg.Connection, org_id: str, portal_id: str) -> None:
    await conn.execute(
        """UPDATE integrations SET matched_portals = matched_portals || to_jsonb($2::text)
           WHERE org_id = $1 AND NOT matched_portals ? $2""", org_id, portal_id)


# --- users (identity projection) -----------------------------------------------------------------


async def upsert_user(conn: asyncpg.Connection, org_id: str, p: Any) -> bool:
    return await upsert_versioned(
        conn, "users", {"org_id": org_id, "crm_user_id": p.crm_user_id},
        {"email": p.email, "name": p.name, "locale": p.locale, "time_zone": p.time_zone, "active": p.active,
         "is_admin": p.is_admin,
         "portal_id": p.portal_id, "portal_user_id": p.portal_user_id, "role": p.profile.role,
         "permissions": list(p.profile.permissions)},
        p.revision, version_col="revision")


async def get_actor(conn: asyncpg.Connection, org_id: str, crm_user_id: str) -> Actor | None:
    row = await conn.fetchrow("SELECT * FROM users WHERE org_id = $1 AND crm_user_id = $2", org_id, crm_user_id)
    if row is None:
        return None
    return Actor(crm_user_id=row["crm_user_id"], active=row["active"], is_admin=row["is_admin"],
                 permissions=frozenset(row["permissions"]), portal_user_id=row["portal_user_id"],
                 email=row["email"], name=row["name"], locale=row["locale"], time_zone=row["time_zone"])


# --- CRM records ---------------------------------------------------------------------------------


async def get_record(conn: asyncpg.Connection, org_id: str, record_type: str, record_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM crm_records WHERE org_id = $1 AND record_type = $2 AND record_id = $3 AND NOT deleted",
        org_id, record_type, record_id)


async def contacts_of_account(conn: asyncpg.Connection, org_id: str, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT * FROM crm_records WHERE org_id = $1 AND record_type = 'contact' AND account_id = $2 AND NOT deleted
           ORDER BY record_id""", org_id, account_id)


async def note_custom_fields(conn: asyncpg.Connection, org_id: str, module: str, kinds: dict[str, str],
                             known: dict[str, str] | None = None) -> None:
    """Merge the kinds seen into the stored ones. The stored kinds are read in one statement (each field's write
    touches only its own row, so reading them all first reads what the field-by-field reads would), unless given
    in `known` (field -> stored kind, fields not stored left out)."""
    from hub_linking.domain import merge_kind

    if not kinds:
        return
    if known is None:
        known = await stored_kinds(conn, org_id, module, list(kinds))
    for field, kind in kinds.items():
        old = known.get(field)
        new = merge_kind(old, kind)
        if new != old:
            await conn.execute(
                """INSERT INTO crm_custom_fields (org_id, module, field, value_kind) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (org_id, module, field) DO UPDATE SET value_kind = EXCLUDED.value_kind""",
                org_id, module, field, new)


async def stored_kinds(conn: asyncpg.Connection, org_id: str, module: str, fields: list[str]) -> dict[str, str]:
    rows = await conn.fetch("SELECT field, value_kind FROM crm_custom_fields WHERE org_id = $1 AND module = $2 "
                            "AND field = ANY($3::text[])", org_id, module, fields)
    return {r["field"]: r["value_kind"] for r in rows}


async def upsert_deal_keeping_before(conn: asyncpg.Connection, keys: dict[str, Any], values: dict[str, Any],
                                     version: int) -> tuple[asyncpg.Record | None, bool]:
    """`SELECT won, version` of the stored deal and `upsert_versioned` of it in one statement: (before, applied).

    Every part of one statement reads the same snapshot, so `before` is the row as it was before the upsert."""
    cols = [*keys, *values, "version"]
    params = [*keys.values(), *values.values(), version]
    placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*values, "version"])
    sql = (f"WITH before AS (SELECT won, version FROM crm_records WHERE org_id = $1 AND record_type = $2 AND record_id = $3), "
           f"up AS (INSERT INTO crm_records ({', '.join(cols)}) VALUES ({placeholders}) "
           f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
           f"WHERE crm_records.version < EXCLUDED.version RETURNING true AS applied) "
           f"SELECT (SELECT applied FROM up) AS applied, b.won, b.version, b.won IS NOT NULL AS found "
           f"FROM (SELECT 1) AS one LEFT JOIN before b ON true")
    assert list(keys) == ["org_id", "record_type", "record_id"]
    r = await conn.fetchrow(sql, *params)
    assert r is not None
    before = r if r["found"] else None
    return before, bool(r["applied"])


async def deal_won_context(conn: asyncpg.Connection, org_id: str, account_id: str | None,
                           fields: list[str]) -> tuple[dict[str, str], Any, Any, str | None]:
    """The reads of a deal that turned won, in one statement: (stored kinds of its custom fields (`stored_kinds`),
    the integration (`get_integration`), the account's name and data (`get_record`), the account's customer pair on
    the integration's portal (`get_pair`)); nothing here is written by the handler before it is used."""
    r = await conn.fetchrow(
        "SELECT i.*, "
        "ARRAY(SELECT field FROM crm_custom_fields WHERE org_id = $1 AND module = 'deals' "
        "      AND field = ANY($3::text[]) ORDER BY field) AS ctx__kf, "
        "ARRAY(SELECT value_kind FROM crm_custom_fields WHERE org_id = $1 AND module = 'deals' "
        "      AND field = ANY($3::text[]) ORDER BY field) AS ctx__kv, "
        "a.record_id IS NOT NULL AS ctx__acc_found, a.name AS ctx__acc_name, a.data AS ctx__acc_data, "
        "(SELECT pm_id FROM customer_pairs WHERE org_id = $1 AND portal_id = i.portal_id AND kind = 'account' "
        " AND crm_id = $2) AS ctx__pair "
        "FROM (SELECT 1) AS one LEFT JOIN integrations i ON i.org_id = $1 "
        "LEFT JOIN crm_records a ON a.org_id = $1 AND a.record_type = 'account' AND a.record_id = $2 AND NOT a.deleted",
        org_id, account_id, fields)
    assert r is not None
    own = {k[5:]: v for k, v in r.items() if k.startswith("ctx__")}
    integ = {k: v for k, v in r.items() if not k.startswith("ctx__")}
    account = {"name": own["acc_name"], "data": own["acc_data"]} if own["acc_found"] else None
    return (dict(zip(own["kf"], own["kv"])), integ if integ.get("org_id") is not None else None, account,
            own["pair"])


async def claim_deal_project(conn: asyncpg.Connection, org_id: str, deal_id: str, command_id: uuid.UUID, portal_id: str,
                             data: dict[str, Any]) -> bool:
    """The deal_projects row (once per deal) and, when it was new, the pending create_project command: one statement.
    False (nothing written) when the deal already has its project."""
    return bool(await conn.fetchval(
        "WITH dp AS (INSERT INTO deal_projects (org_id, deal_id, command_id) VALUES ($1, $2, $3) "
        "            ON CONFLICT DO NOTHING RETURNING true AS inserted), "
        "pc AS (INSERT INTO pending_commands (command_id, org_id, kind, portal_id, data) "
        "       SELECT $3, $1, 'create_project', $4, $5 FROM dp) "
        "SELECT inserted FROM dp",
        org_id, deal_id, command_id, portal_id, data))


async def custom_fields(conn: asyncpg.Connection, org_id: str) -> dict[tuple[str, str], str]:
    rows = await conn.fetch("SELECT module, field, value_kind FROM crm_custom_fields WHERE org_id = $1", org_id)
    return {(r["module"], r["field"]): r["value_kind"] for r in rows}


# --- PM side -------------------------------------------------------------------------------------


async def get_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM portals WHERE org_id = $1 AND portal_id = $2", org_id, portal_id)


async def get_project(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM projects WHERE org_id = $1 AND portal_id = $2 AND project_id = $3 AND NOT deleted",
        org_id, portal_id, project_id)


async def projects_of_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM projects WHERE org_id = $1 AND portal_id = $2 AND NOT deleted ORDER BY project_id",
        org_id, portal_id)


async def pm_custom_types(conn: asyncpg.Connection, org_id: str, portal_id: str) -> dict[str, str]:
    from hub_linking.domain import pm_value_type

    out: dict[str, str] = {}
    for row in await projects_of_portal(conn, org_id, portal_id):
        for k, v in (row["custom_fields"] or {}).items():
            if v is not None:
                out.setdefault(k, pm_value_type(v))
    return out


async def get_pair(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, crm_id: str) -> str | None:
    return await conn.fetchval(
        "SELECT pm_id FROM customer_pairs WHERE org_id = $1 AND portal_id = $2 AND kind = $3 AND crm_id = $4",
        org_id, portal_id, kind, crm_id)


async def set_pair(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, crm_id: str, pm_id: str,
                   revision: int = 0) -> None:
    await conn.execute(
        """INSERT INTO customer_pairs (org_id, portal_id, kind, crm_id, pm_id, revision) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (org_id, portal_id, kind, crm_id) DO UPDATE SET pm_id = EXCLUDED.pm_id,
               revision = GREATEST(customer_pairs.revision, EXCLUDED.revision)
           WHERE customer_pairs.revision <= EXCLUDED.revision""",
        org_id, portal_id, kind, crm_id, pm_id, revision)


async def get_client_user(conn: asyncpg.Connection, org_id: str, portal_id: str, client_user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM client_users WHERE org_id = $1 AND portal_id = $2 AND client_user_id = $3 AND NOT deleted",
        org_id, portal_id, client_user_id)


# --- links ---------------------------------------------------------------------------------------


async def set_link(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str, record_type: str,
                   record_id: str, *, active: bool, source: str) -> int | None:
    """Link or unlink; returns the link's new revision, or None when nothing changed."""
    if active:
        return await conn.fetchval(
            """INSERT INTO links (org_id, portal_id, project_id, record_type, record_id, active, revision, source)
               VALUES ($1, $2, $3, $4, $5, true, 1, $6)
               ON CONFLICT (org_id, portal_id, project_id, record_type, record_id) DO UPDATE
                   SET active = true, revision = links.revision + 1, source = EXCLUDED.source, changed_at = now()
                   WHERE NOT links.active
               RETURNING revision""",
            org_id, portal_id, project_id, record_type, record_id, source)
    return await conn.fetchval(
        """UPDATE links SET active = false, revision = revision + 1, source = $6, changed_at = now()
           WHERE org_id = $1 AND portal_id = $2 AND project_id = $3 AND record_type = $4 AND record_id = $5 AND active
           RETURNING revision""",
        org_id, portal_id, project_id, record_type, record_id, source)


async def is_linked(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str, record_type: str,
                    record_id: str) -> bool:
    return bool(await conn.fetchval(
        """SELECT active FROM links WHERE org_id = $1 AND portal_id = $2 AND project_id = $3 AND record_type = $4
           AND record_id = $5""", org_id, portal_id, project_id, record_type, record_id))


async def active_links_of_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT * FROM links WHERE org_id = $1 AND portal_id = $2 AND active
           ORDER BY project_id, record_type, record_id""", org_id, portal_id)


async def linked_project_ids(conn: asyncpg.Connection, org_id: str, portal_id: str, record_type: str,
                             record_id: str) -> set[str]:
    rows = await conn.fetch(
        """SELECT project_id FROM links WHERE org_id = $1 AND portal_id = $2 AND record_type = $3 AND record_id = $4
           AND active""", org_id, portal_id, record_type, record_id)
    return {r["project_id"] for r in rows}


# --- pending commands ------------------------------------------------------------------------------


async def add_pending(conn: asyncpg.Connection, command_id: uuid.UUID, org_id: str, kind: str, portal_id: str,
                      data: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO pending_commands (command_id, org_id, kind, portal_id, data) VALUES ($1, $2, $3, $4, $5)",
        command_id, org_id, kind, portal_id, data)


async def take_pending(conn: asyncpg.Connection, org_id: str, command_id: uuid.UUID | None,
                       kind: str) -> asyncpg.Record | None:
    """The pending command this echo answers (once: it is marked done); only `org_id`'s, so an echo naming
    another org's command finds nothing."""
    if command_id is None:
        return None
    return await conn.fetchrow(
        "UPDATE pending_commands SET done = true WHERE org_id = $1 AND command_id = $2 AND kind = $3 AND NOT done "
        "RETURNING *", org_id, command_id, kind)


# --- service keys ----------------------------------------------------------------------------------


async def store_service_key(conn: asyncpg.Connection, org_id: str, key_id: uuid.UUID, sha256: str, by: str) -> None:
    """Replace the org's key: the old one stops matching in the same commit (S24)."""
    await conn.execute(
        """INSERT INTO service_keys (org_id, key_id, key_sha256, created_by) VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id) DO UPDATE SET key_id = EXCLUDED.key_id, key_sha256 = EXCLUDED.key_sha256,
               created_by = EXCLUDED.created_by, created_at = now()""",
        org_id, key_id, sha256, by)


async def org_of_key(conn: asyncpg.Connection, sha256: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT org_id, key_sha256 FROM service_keys WHERE key_sha256 = $1", sha256)
