"""`write_outbox_rows`: a batch's outbox rows in one statement, ids in list order (the relay publishes by id)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db
from hub_platform.outbox import OutboxRow, write_outbox_rows

pytestmark = pytest.mark.integration


async def test_rows_get_ids_in_list_order_with_their_headers_and_bytes(hub_env: HubEnv) -> None:
    from hub_devstack.provision import provision_service

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "outboxrows", "outboxrows")
    await db.migrate_async(dsn, "outboxrows", None)
    pool = await db.create_pool(dsn, "outboxrows")
    try:
        # keys interleaved and values not sorted, so neither could stand in for the list order
        rows = [OutboxRow(f"t{i % 3}", f"key-{(i * 7) % 5}", {"traceparent": f"00-{i}"} if i % 2 else None,
                          f"value {(i * 37) % 1000}".encode() + b"\x00\xff", uuid.uuid4() if i % 4 else None)
                for i in range(1000)]
        async with pool.acquire() as conn, conn.transaction():
            await write_outbox_rows(conn, rows)
            await write_outbox_rows(conn, [])
        got = await pool.fetch("SELECT topic, key, headers, value, event_id FROM outbox ORDER BY id")
        assert [(r["topic"], r["key"], r["headers"], bytes(r["value"]), r["event_id"]) for r in got] == \
            [(r.topic, r.key, dict(r.headers or {}), r.value, r.event_id) for r in rows]
    finally:
        await pool.close()
