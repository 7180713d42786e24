"""Permission profile history per org (S3, S23): appended under an advisory lock, never rewritten."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from hub_identity.domain import ProfileVersion
from hub_schema.events.common import PermissionProfile


def _profile(row: asyncpg.Record) -> ProfileVersion:
    return ProfileVersion(row["revision"], PermissionProfile(role=row["role"], permissions=list(row["permissions"])),
                          row["effective_from"])


async def latest_profiles(conn: asyncpg.Connection, org_ids: Sequence[str]) -> dict[str, ProfileVersion]:
    """The latest revision of each org's profile (orgs with none are left out), in one query."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (org_id) org_id, revision, role, permissions, effective_from FROM permission_profiles "
        "WHERE org_id = ANY($1::text[]) ORDER BY org_id, revision DESC", list(org_ids))
    return {r["org_id"]: _profile(r) for r in rows}


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
