"""Transactional outbox: events are written with the state change and published by a relay.

The relay publishes rows in id order with an idempotent producer (acks=all),
then deletes them. If it dies between publishing and deleting, the rows are
published again on restart and the consumers' inboxes absorb the copies.
Only one relay per service schema runs at a time (a PostgreSQL advisory lock),
so replicas never publish the same key out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import asyncpg
from aiokafka import AIOKafkaProducer

from hub_platform import failpoints, metrics
from hub_platform.db import json_text
from hub_platform.logs import get_logger
from hub_platform.settings import KafkaSettings
from hub_platform.waiting import wait_event

log = get_logger(__name__)


NOTIFY_PREFIX = "hub_outbox_"
"""`NOTIFY_PREFIX + schema`: the channel a schema's relay listens on; every outbox write notifies it."""


async def write_outbox(
    conn: asyncpg.Connection,
    *,
    topic: str,
    key: str,
    value: bytes,
    headers: Mapping[str, str] | None = None,
    event_id: uuid.UUID | None = None,
) -> None:
    """One row, and a notification of the schema's relay (delivered on commit; see `write_outbox_rows`)."""
    await conn.execute(
        "WITH written AS (INSERT INTO outbox (topic, key, headers, value, event_id) VALUES ($1, $2, $3, $4, $5)) "
        f"SELECT pg_notify('{NOTIFY_PREFIX}' || current_schema(), '')",
        topic, key, dict(headers or {}), value, event_id,
    )


class OutboxRow(NamedTuple):
    topic: str
    key: str
    headers: Mapping[str, str] | None
    value: bytes
    event_id: uuid.UUID | None


async def write_outbox_rows(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    """Many rows in one statement (`INSERT … SELECT FROM unnest(…) WITH ORDINALITY ORDER BY` the list position), so
    the ids follow the list's order and per-key order holds; one round trip and one plan for the whole batch instead
    of a pipelined statement per row. The same statement notifies the schema's relay (`pg_notify`, delivered when
    the transaction commits), which may run in another replica than the one that committed."""
    if rows:
        await conn.execute(
            "WITH written AS (INSERT INTO outbox (topic, key, headers, value, event_id) "
            "SELECT t, k, h::jsonb, v, e FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::uuid[]) "
            "WITH ORDINALITY AS x(t, k, h, v, e, n) ORDER BY n) "
            f"SELECT pg_notify('{NOTIFY_PREFIX}' || current_schema(), '')",
            [r.topic for r in rows], [r.key for r in rows], [_headers_json(r.headers) for r in rows],
            [r.value for r in rows], [r.event_id for r in rows],
        )


def _headers_json(headers: Mapping[str, str] | None) -> str:
    return json_text(dict(headers)) if headers else "{}"


def make_producer(kafka: KafkaSettings, **overrides: object) -> AIOKafkaProducer:
    opts: dict[str, object] = {
        **kafka.client_options(),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 15000,
    }
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


class OutboxRelay:
    """Publishes a service's outbox rows to Kafka, in order, at least once."""

    def __init__(self, dsn: str, schema: str, kafka: KafkaSettings, service: str, *, batch: int = 500, poll_seconds: float = 0.5) -> None:
        self.dsn = dsn
        self.schema = schema
        self.kafka = kafka
        self.service = service
        self.batch = batch
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self.is_leader = False
        self.published = 0
        self.waits = 0  # how often it went idle (waiting for a commit or the poll)

    def wake(self) -> None:
        """Called after a handler's transaction committed: publish now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                await self._lead_and_publish()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or broker down: keep the rows, try again
                self.is_leader = False
                log.warning("outbox relay interrupted", error=repr(exc), retry_in=backoff)
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await self._close_producer()

    async def _close_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def _lead_and_publish(self) -> None:
        # synchronous_commit off: the relay's only writes are the DELETEs of rows already published, and a DELETE lost
        # in a database crash only means those rows are published again (at least once; the inboxes absorb copies),
        # so it need not wait for the WAL flush (the handlers' transactions still do)
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema, "application_name": f"hub-{self.service}-relay",
                                                                "synchronous_commit": "off"})
        try:
            await conn.set_type_codec("jsonb", encoder=json_text, decoder=json.loads, schema="pg_catalog")
            # woken by every outbox write committed in this schema, by any replica (this process also wakes it
            # directly); a relay waiting for the leader's lock tries again then too, so it takes over without a poll
            await conn.add_listener(NOTIFY_PREFIX + self.schema, self._notified)
            while not self._stopping:
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"{self.schema}.outbox"):
                    break
                await self._wait()
            else:
                return
            self.is_leader = True
            if self._producer is None:
                self._producer = make_producer(self.kafka)
                await self._producer.start()
            while True:
                published = await self._publish_once(conn)
                if published == 0 and self._stopping:
                    return
                if published < self.batch and not self._stopping:
                    # it took all there was: a row committed since notifies (`_wake`), so wait rather than ask again
                    # (the empty SELECT was a round trip per batch, on the path of the next batch's events)
                    metrics.OUTBOX_BACKLOG.labels(self.service).set(0)
                    await self._wait()
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _wait(self) -> None:
        self.waits += 1
        await wait_event(self._wake, self.poll_seconds)
        self._wake.clear()

    async def _publish_once(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch("SELECT id, topic, key, headers, value FROM outbox ORDER BY id LIMIT $1", self.batch)
        metrics.OUTBOX_BACKLOG.labels(self.service).set(len(rows))
        if not rows:
            return 0
        assert self._producer is not None
        futures = []
        for row in rows:
            headers = [(k, str(v).encode()) for k, v in (row["headers"] or {}).items()]
            futures.append(await self._producer.send(row["topic"], value=bytes(row["value"]), key=row["key"].encode(), headers=headers))
        await asyncio.gather(*futures)
        failpoints.hit("relay.after_publish")
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)
