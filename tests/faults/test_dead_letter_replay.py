"""Found by the fault suite: a batch replayed after a crash dead-letters its bad messages a second time.

The consumer commits the batch's transaction (inbox rows, effects, outbox rows, dead letters) and
only then the Kafka offsets; a crash in between replays the batch. Valid events are absorbed by the
inbox, but a message refused *before* it has an event id (malformed JSON, unknown type, unsupported
version, oversized, invalid payload) or by a handler's PermanentError (its inbox row is rolled back
with the savepoint) is written to the dead-letter outbox again. The suite counts these copies
("re-delivered copies" in docs/faults/LAST_RUN.md); every copy carries the same x-dlq-topic /
x-dlq-partition / x-dlq-offset, so a reader can de-duplicate on them.

This test replays one batch by hand, without a broker. The platform now records each dead letter in
`dead_letter_log` keyed by (consumer, topic, partition, offset) in the same transaction, so the
replay finds it and writes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db, echo
from hub_platform.consumer import BatchProcessor
from hub_schema.topics import TopicNames

pytestmark = pytest.mark.integration


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


async def test_a_replayed_batch_dead_letters_a_bad_message_once(hub_env: HubEnv) -> None:
    from hub_devstack.provision import provision_service

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    await db.migrate_async(dsn, "echo", Path(echo.__file__).parent / "echo_migrations")
    pool = await db.create_pool(dsn, "echo")
    try:
        processor = BatchProcessor(pool, echo.router, consumer="echo", producer="echo", topics=TopicNames(hub_env.topic_prefix))
        batch = [FakeRecord(topic=f"{hub_env.topic_prefix}crm.ingest", partition=0, offset=42, key=b"k", value=b"{not json")]
        await processor.process(batch)
        await processor.process(batch)  # the same batch after a crash before the offsets were committed
        conn = await asyncpg.connect(dsn)
        try:
            dead = await conn.fetchval("SELECT count(*) FROM echo.outbox WHERE topic LIKE '%hub.deadletters'")
        finally:
            await conn.close()
        assert dead == 1, f"the replayed batch wrote {dead} dead letters for one bad message"
    finally:
        await pool.close()
