"""Org service keys (S24) for services that check them but do not mint them (tasks, notifications).

linking mints a key and publishes `linking.service_key.rotated` with the key's SHA-256 (never the
key). A service that serves tenant data over HTTP keeps the current hash per org in its own
`service_keys` table (org_id primary key, key_sha256 unique, rotated_at) and answers with
`org_of_key`; the previous key of an org stops matching when the rotation is applied. Events of
one org share a key (`<org>:service_key`), so they arrive in order; `rotated_at` guards replays.
"""

from __future__ import annotations

import asyncpg

from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event
from hub_schema.events.linking import ServiceKeyRotated

router = Router()


@router.on(ServiceKeyRotated)
async def on_service_key_rotated(ctx: HandlerContext, event: Event[ServiceKeyRotated]) -> None:
    p = event.payload
    await ctx.conn.execute(
        """INSERT INTO service_keys (org_id, key_id, key_sha256, rotated_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id) DO UPDATE SET key_id = EXCLUDED.key_id, key_sha256 = EXCLUDED.key_sha256,
               rotated_at = EXCLUDED.rotated_at
           WHERE service_keys.rotated_at <= EXCLUDED.rotated_at""",
        event.org_id, p.key_id, p.key_sha256, p.rotated_at)


async def org_of_key(conn: asyncpg.Connection, key_sha256: str) -> str | None:
    """The org whose current key has this SHA-256 (the same query works on linking's own table)."""
    return await conn.fetchval("SELECT org_id FROM service_keys WHERE key_sha256 = $1", key_sha256)

