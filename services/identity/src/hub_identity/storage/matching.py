"""Client companies a matching run found ambiguous (S21/S22), kept from its pages until its completion."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg


async def note_ambiguous(conn: asyncpg.Connection, org_id: str, report_id: uuid.UUID, company_ids: Sequence[str]) -> None:
    await conn.execute(
        "INSERT INTO matching_ambiguous (org_id, report_id, client_company_id) SELECT $1, $2, unnest($3::text[]) "
        "ON CONFLICT DO NOTHING", org_id, report_id, list(company_ids))


async def take_ambiguous(conn: asyncpg.Connection, org_id: str, report_id: uuid.UUID) -> set[str]:
    """The run's ambiguous client companies, forgotten (the run is over)."""
    return {r["client_company_id"] for r in await conn.fetch(
        "DELETE FROM matching_ambiguous WHERE org_id = $1 AND report_id = $2 RETURNING client_company_id",
        org_id, report_id)}
