"""SQL on the handler's asyncpg connection (identity's own schema; search_path is set).

Upstream records go through one helper, `apply_versioned`: an INSERT ... ON CONFLICT
that only overwrites a row whose stored `version` is older, so the version check and
the write are one statement and cannot race between replicas.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from hub_identity.domain import ProfileVersion
from hub_schema.events.common import PermissionProfile

Row = asyncpg.Record


async def apply_versioned(conn: asyncpg.Connection, table: str, keys: dict[str, Any], values: dict[str, Any],
                          version: int) -> bool:
    """Insert or overwrite the row if `version` is newer than the stored one; False when stale."""
    cols = [*keys, *values, "version"]
    args = [*keys.values(), *values.values(), version]
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*values, "version"])
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders}) "
           f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
           f"WHERE {table}.version < EXCLUDED.version RETURNING true")
    return bool(await conn.fetchval(sql, *args))


# --- orgs and profiles -------------------------------------------------------------------------


async def get_org(conn: asyncpg.Connection, org_id: str) -> Row | None:
    return await conn.fetchrow("SELECT * FROM orgs WHERE org_id = $1", org_id)


async def apply_integration(conn: asyncpg.Connection, org_id: str, state: str, portal_id: str | None,
                            revision: int, matching_pending: bool = False) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO orgs (org_id, state, portal_id, integration_revision, matching_pending) "
        "VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (org_id) DO UPDATE SET state = EXCLUDED.state, portal_id = EXCLUDED.portal_id, "
        "integration_revision = EXCLUDED.integration_revision, matching_pending = EXCLUDED.matching_pending "
        "WHERE orgs.integration_revision < EXCLUDED.integration_revision RETURNING true",
        org_id, state, portal_id, revision, matching_pending,
    ))


async def set_matching_pending(conn: asyncpg.Connection, org_id: str, pending: bool) -> None:
    await conn.execute("UPDATE orgs SET matching_pending = $2 WHERE org_id = $1", org_id, pending)


async def matching_pending(conn: asyncpg.Connection, org_id: str) -> bool:
    """True while linking's client <-> account matching for the org's current portal has not reported yet."""
    return bool(await conn.fetchval("SELECT matching_pending FROM orgs WHERE org_id = $1", org_id))


async def portal_of(conn: asyncpg.Connection, org_id: str) -> str | None:
    """The portal the org is integrated with, or None when the integration is not enabled."""
    return await conn.fetchval("SELECT portal_id FROM orgs WHERE org_id = $1 AND state = 'enabled'", org_id)


def _profile(row: Row) -> ProfileVersion:
    return ProfileVersion(row["revision"], PermissionProfile(role=row["role"], permissions=list(row["permissions"])),
                          row["effective_from"])


async def latest_profile(conn: asyncpg.Connection, org_id: str) -> ProfileVersion | None:
    row = await conn.fetchrow(
        "SELECT * FROM permission_profiles WHERE org_id = $1 ORDER BY revision DESC LIMIT 1", org_id)
    return _profile(row) if row else None


async def profile_history(conn: asyncpg.Connection, org_id: str) -> list[ProfileVersion]:
    rows = await conn.fetch("SELECT * FROM permission_profiles WHERE org_id = $1 ORDER BY revision", org_id)
    return [_profile(r) for r in rows]


async def add_profile(conn: asyncpg.Connection, org_id: str, profile: PermissionProfile, effective_from: datetime,
                      changed_by: str, request_id: uuid.UUID | None = None) -> int | None:
    """Append a profile revision; None if this request was already applied (a re-sent request)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('identity-profile:' || $1))", org_id)
    return await conn.fetchval(
        "INSERT INTO permission_profiles (org_id, revision, role, permissions, effective_from, changed_by, request_id) "
        "SELECT $1, coalesce(max(revision), 0) + 1, $2, $3, $4, $5, $6 FROM permission_profiles WHERE org_id = $1 "
        "ON CONFLICT DO NOTHING RETURNING revision",
        org_id, profile.role, list(profile.permissions), effective_from, changed_by, request_id,
    )


# --- CRM users and portal users ---------------------------------------------------------------


async def get_crm_user(conn: asyncpg.Connection, org_id: str, crm_user_id: str) -> Row | None:
    return await conn.fetchrow("SELECT * FROM crm_users WHERE org_id = $1 AND crm_user_id = $2", org_id, crm_user_id)


async def crm_users_of_org(conn: asyncpg.Connection, org_id: str) -> list[Row]:
    return await conn.fetch("SELECT * FROM crm_users WHERE org_id = $1 ORDER BY crm_user_id", org_id)


async def crm_users_with_email(conn: asyncpg.Connection, org_id: str, email_norm: str) -> list[Row]:
    return await conn.fetch("SELECT * FROM crm_users WHERE org_id = $1 AND email_norm = $2", org_id, email_norm)


async def deactivate_crm_user(conn: asyncpg.Connection, org_id: str, crm_user_id: str, version: int,
                              modified_at: datetime) -> bool:
    return bool(await conn.fetchval(
        "UPDATE crm_users SET active = false, version = $3, modified_at = $4 "
        "WHERE org_id = $1 AND crm_user_id = $2 AND version < $3 RETURNING true",
        org_id, crm_user_id, version, modified_at,
    ))


async def set_user_portal(conn: asyncpg.Connection, org_id: str, crm_user_id: str, portal_id: str | None,
                          portal_user_id: str | None) -> None:
    await conn.execute("UPDATE crm_users SET portal_id = $3, portal_user_id = $4 WHERE org_id = $1 AND crm_user_id = $2",
                       org_id, crm_user_id, portal_id, portal_user_id)


async def next_access_revision(conn: asyncpg.Connection, org_id: str, crm_user_id: str) -> int:
    return await conn.fetchval(
        "UPDATE crm_users SET access_revision = access_revision + 1 WHERE org_id = $1 AND crm_user_id = $2 "
        "RETURNING access_revision", org_id, crm_user_id)


async def get_portal_user(conn: asyncpg.Connection, org_id: str, portal_id: str, user_id: str) -> Row | None:
    return await conn.fetchrow("SELECT * FROM portal_users WHERE org_id = $1 AND portal_id = $2 AND id = $3",
                               org_id, portal_id, user_id)


async def portal_user_with_email(conn: asyncpg.Connection, org_id: str, portal_id: str, email_norm: str) -> Row | None:
    """The live portal user with this e-mail (active ones first)."""
    return await conn.fetchrow(
        "SELECT * FROM portal_users WHERE org_id = $1 AND portal_id = $2 AND email_norm = $3 AND NOT deleted "
        "ORDER BY active DESC, id LIMIT 1", org_id, portal_id, email_norm)


# --- customers --------------------------------------------------------------------------------


async def get_row(conn: asyncpg.Connection, table: str, **keys: Any) -> Row | None:
    where = " AND ".join(f"{k} = ${i}" for i, k in enumerate(keys, 1))
    return await conn.fetchrow(f"SELECT * FROM {table} WHERE {where}", *keys.values())


async def contacts_of_account(conn: asyncpg.Connection, org_id: str, account_id: str) -> list[Row]:
    return await conn.fetch("SELECT * FROM contacts WHERE org_id = $1 AND account_id = $2 AND NOT deleted ORDER BY id",
                            org_id, account_id)


async def client_users_with_email(conn: asyncpg.Connection, org_id: str, portal_id: str, email_norm: str) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM client_users WHERE org_id = $1 AND portal_id = $2 AND email_norm = $3 AND NOT deleted ORDER BY id",
        org_id, portal_id, email_norm)


async def taken_client_emails(conn: asyncpg.Connection, org_id: str, portal_id: str,
                              emails: list[str]) -> dict[str, Row]:
    rows = await conn.fetch(
        "SELECT * FROM client_users WHERE org_id = $1 AND portal_id = $2 AND email_norm = ANY($3) AND NOT deleted",
        org_id, portal_id, emails)
    return {r["email_norm"]: r for r in rows}


async def unmapped_companies_named(conn: asyncpg.Connection, org_id: str, portal_id: str, name: str) -> list[Row]:
    return await conn.fetch(
        "SELECT c.* FROM client_companies c WHERE c.org_id = $1 AND c.portal_id = $2 AND NOT c.deleted "
        "AND lower(trim(c.name)) = lower(trim($3)) AND NOT EXISTS (SELECT 1 FROM customer_mappings m "
        "WHERE m.org_id = c.org_id AND m.portal_id = c.portal_id AND m.kind = 'account' AND m.pm_id = c.id "
        "AND m.state <> 'unlinked')", org_id, portal_id, name)


async def unmapped_accounts_named(conn: asyncpg.Connection, org_id: str, portal_id: str, name: str) -> list[Row]:
    return await conn.fetch(
        "SELECT a.* FROM accounts a WHERE a.org_id = $1 AND NOT a.deleted AND lower(trim(a.name)) = lower(trim($3)) "
        "AND NOT EXISTS (SELECT 1 FROM customer_mappings m WHERE m.org_id = a.org_id AND m.portal_id = $2 "
        "AND m.kind = 'account' AND m.crm_id = a.id)", org_id, portal_id, name)


async def unmapped_accounts(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[Row]:
    """Live accounts with no mapping row at all in the portal (an `unlinked` row was unlinked on purpose)."""
    return await conn.fetch(
        "SELECT a.* FROM accounts a WHERE a.org_id = $1 AND NOT a.deleted AND a.name IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM customer_mappings m WHERE m.org_id = a.org_id AND m.portal_id = $2 "
        "AND m.kind = 'account' AND m.crm_id = a.id) ORDER BY a.id", org_id, portal_id)


async def get_mapping(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, crm_id: str) -> Row | None:
    return await conn.fetchrow(
        "SELECT * FROM customer_mappings WHERE org_id = $1 AND portal_id = $2 AND kind = $3 AND crm_id = $4",
        org_id, portal_id, kind, crm_id)


async def mapping_by_pm(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, pm_id: str) -> Row | None:
    return await conn.fetchrow(
        "SELECT * FROM customer_mappings WHERE org_id = $1 AND portal_id = $2 AND kind = $3 AND pm_id = $4 "
        "AND state <> 'unlinked'", org_id, portal_id, kind, pm_id)


async def save_mapping(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, crm_id: str,
                       pm_id: str | None, state: str, pending_command_id: uuid.UUID | None = None) -> int:
    """Insert or change a mapping; returns its new revision."""
    return await conn.fetchval(
        "INSERT INTO customer_mappings (org_id, portal_id, kind, crm_id, pm_id, state, pending_command_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, portal_id, kind, crm_id) DO UPDATE SET "
        "pm_id = EXCLUDED.pm_id, state = EXCLUDED.state, pending_command_id = EXCLUDED.pending_command_id, "
        "revision = customer_mappings.revision + 1 RETURNING revision",
        org_id, portal_id, kind, crm_id, pm_id, state, pending_command_id)


# --- pending commands -------------------------------------------------------------------------


async def add_pending(conn: asyncpg.Connection, command_id: uuid.UUID, org_id: str, command_type: str,
                      subject_kind: str, subject_id: str, request_id: uuid.UUID | None = None) -> None:
    await conn.execute(
        "INSERT INTO pending_commands (command_id, org_id, command_type, subject_kind, subject_id, request_id) "
        "VALUES ($1, $2, $3, $4, $5, $6)", command_id, org_id, command_type, subject_kind, subject_id, request_id)


async def take_pending(conn: asyncpg.Connection, org_id: str, command_id: uuid.UUID | None) -> Row | None:
    """The pending command an echo answers, removed; only `org_id`'s (an echo naming another org's command finds nothing)."""
    if command_id is None:
        return None
    return await conn.fetchrow("DELETE FROM pending_commands WHERE org_id = $1 AND command_id = $2 RETURNING *",
                               org_id, command_id)


async def pending_for(conn: asyncpg.Connection, org_id: str, command_type: str, subject_id: str) -> Row | None:
    return await conn.fetchrow(
        "SELECT * FROM pending_commands WHERE org_id = $1 AND command_type = $2 AND subject_id = $3 LIMIT 1",
        org_id, command_type, subject_id)


async def client_user_names(conn: asyncpg.Connection, org_id: str, ids: list[str]) -> list[str]:
    """The names (else e-mail addresses) of these client users, in the order given."""
    if not ids:
        return []
    rows = {r["id"]: r["name"] or r["email"] or r["id"] for r in await conn.fetch(
        "SELECT id, name, email FROM client_users WHERE org_id = $1 AND id = ANY($2::text[])", org_id, ids)}
    return [rows[i] for i in ids if i in rows]
