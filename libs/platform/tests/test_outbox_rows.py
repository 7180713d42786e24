"""`write_outbox_rows`: a batch's outbox rows in one statement, ids in list order (the relay publishes by id)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe
from hub_platform import db
from hub_platform.outbox import OutboxRelay, OutboxRow, write_outbox_rows
from hub_schema.events.diagnostics import DiagPong

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


async def _echo_relay(hub_env: HubEnv) -> tuple[str, OutboxRelay]:
    """The echo schema, migrated, and a relay on it whose poll is an hour (so only a notification wakes it)."""
    from hub_devstack.provision import provision_service

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    await db.migrate_async(dsn, "echo", None)
    return dsn, OutboxRelay(dsn, "echo", hub_env.kafka_settings("echo"), "echo", poll_seconds=3600)


async def _until_leader_and_waiting(relay: OutboxRelay, deadline: float) -> None:
    """Leader, its first (empty) publish done, now waiting."""
    while relay.waits == 0:
        assert asyncio.get_running_loop().time() < deadline, "the relay never became leader"
        await asyncio.sleep(0.05)


async def test_a_commit_on_another_connection_wakes_the_relay(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """A replica that is not the relay's leader commits a batch: the leader hears of it (NOTIFY on commit), not
    from its poll, which is an hour here, so the row can only come out because the commit woke it."""
    dsn, relay = await _echo_relay(hub_env)
    out = await kafka_probe.reader(DiagPong.TOPIC)
    await relay.start()
    pool = await db.create_pool(dsn, "echo")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        await _until_leader_and_waiting(relay, deadline)
        async with pool.acquire() as conn, conn.transaction():
            await write_outbox_rows(conn, [OutboxRow(hub_env.topic(DiagPong.TOPIC), "k", None, b"from another replica", None)])
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 1, timeout=60)
        assert [r.value for r in records] == [b"from another replica"]
        while await pool.fetchval("SELECT count(*) FROM outbox"):  # published, then deleted (just after the send)
            assert loop.time() < deadline + 60, "the published row was never deleted"
            await asyncio.sleep(0.05)
    finally:
        await pool.close()
        await relay.stop()


async def test_after_publishing_all_it_found_the_relay_waits_for_the_next_commit_without_asking_again(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """A SELECT that fetched fewer rows than its limit took everything committed then, and any later commit
    notifies: the relay waits instead of sending one more (empty) SELECT per batch. Each commit, from this process
    or another, still comes out at once (the poll is an hour here)."""
    dsn, relay = await _echo_relay(hub_env)
    fetched: list[int] = []
    publish_once = relay._publish_once

    async def counting(conn: object) -> int:
        n = await publish_once(conn)  # type: ignore[arg-type]
        fetched.append(n)
        return n

    relay._publish_once = counting  # type: ignore[method-assign]
    out = await kafka_probe.reader(DiagPong.TOPIC)
    await relay.start()
    pool = await db.create_pool(dsn, "echo")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        await _until_leader_and_waiting(relay, deadline)
        records = []
        for i in range(3):
            async with pool.acquire() as conn, conn.transaction():
                await write_outbox_rows(conn, [OutboxRow(hub_env.topic(DiagPong.TOPIC), "k", None, f"commit {i}".encode(), None)])
            records += await kafka_probe.collect(out, lambda rs: len(rs) >= 1, timeout=60)
            # the next commit only once this publish returned (the record can reach the reader before it does); the
            # relay then decides at once, without awaiting anything, whether to wait or to ask again
            back_by = loop.time() + 60
            while len(fetched) < i + 2:
                assert loop.time() < back_by, "the relay's publish did not return"
                await asyncio.sleep(0.02)
        assert [r.value for r in records] == [b"commit 0", b"commit 1", b"commit 2"]
        assert fetched == [0, 1, 1, 1], "one SELECT per commit, none left empty after a publish"
    finally:
        await pool.close()
        await relay.stop()
