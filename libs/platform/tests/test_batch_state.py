"""A service's batch state (issue 16): loaded once per batch, changed in memory, flushed in bulk.

Run through the platform's BatchProcessor on the real database, without a broker (the records are built by
hand), so the optimistic path, the careful fallback and savepoints can be driven exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db, echo
from hub_platform.consumer import BATCH_CUTS, BatchBound, BatchProcessor, HandlerContext, PermanentError, Router
from hub_schema import Event, encode, make_event
from hub_schema.events.diagnostics import DiagPing, DiagPong
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


@dataclass
class Counters:
    """Pings counted per entity key: the smallest state a service could keep."""

    counts: dict[str, int]
    loaded_keys: list[str]
    dirty: set[str] = field(default_factory=set)

    @classmethod
    async def load(cls, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> Counters:
        keys = sorted({e.envelope.entity_key for e in events})
        LOADS.append(keys)
        rows = await conn.fetch("SELECT key, n FROM ping_counts WHERE key = ANY($1)", keys)
        counts = {k: 0 for k in keys} | {r["key"]: r["n"] for r in rows}
        return cls(counts, keys)

    async def flush(self, conn: asyncpg.Connection) -> None:
        keys = sorted(self.dirty)
        if "unwritable" in keys:  # a row the database refuses (a constraint): only the bulk write finds out
            await conn.execute("SELECT 1/0")
        await conn.execute(
            "INSERT INTO ping_counts (key, n) SELECT * FROM unnest($1::text[], $2::int[]) "
            "ON CONFLICT (key) DO UPDATE SET n = excluded.n", keys, [self.counts[k] for k in keys])

    def snapshot(self) -> Any:
        return copy.deepcopy((self.counts, self.dirty))

    def restore(self, snapshot: Any) -> None:
        self.counts, self.dirty = snapshot


LOADS: list[list[str]] = []
COMMITTED: list[int] = []

router = Router(state=Counters.load)


class Undo(Exception):
    pass


@router.on(DiagPing)
async def count(ctx: HandlerContext, event: Event[DiagPing]) -> None:
    state: Counters = ctx.state
    key = event.envelope.entity_key
    if event.payload.note == "reject":
        raise PermanentError("asked to be rejected")
    if event.payload.note == "undo":
        try:
            async with ctx.savepoint():
                state.counts[key] += 100
                state.dirty.add(key)
                await ctx.emit(DiagPong(seq=event.payload.seq, ping_event_id=str(event.event_id)), entity_key=key)
                ctx.after_commit(lambda: COMMITTED.append(-1))
                raise Undo
        except Undo:
            return
    state.counts[key] += 1
    state.dirty.add(key)
    await ctx.emit(DiagPong(seq=event.payload.seq, ping_event_id=str(event.event_id)), entity_key=key)
    ctx.after_commit(lambda: COMMITTED.append(event.payload.seq))


def records(prefix: str, pings: list[tuple[str, int, str | None]], first_offset: int = 0) -> list[FakeRecord]:
    out = []
    for i, (key, seq, note) in enumerate(pings):
        env = make_event(DiagPing(seq=seq, note=note or ""), org_id="org-1", entity_key=key, producer="test", origin="crm")
        out.append(FakeRecord(f"{prefix}crm.ingest", 0, first_offset + i, key.encode(), encode(env)))
    return out


@pytest.fixture
async def pool(hub_env: HubEnv):
    from hub_devstack.provision import provision_service

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    await db.migrate_async(dsn, "echo", Path(echo.__file__).parent / "echo_migrations")
    pool = await db.create_pool(dsn, "echo")
    await pool.execute("CREATE TABLE IF NOT EXISTS ping_counts (key text PRIMARY KEY, n int NOT NULL)")
    LOADS.clear()
    COMMITTED.clear()
    try:
        yield pool
    finally:
        await pool.close()


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {r["key"]: r["n"] for r in await pool.fetch("SELECT key, n FROM ping_counts")}


async def pongs(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE topic LIKE '%pm.ingest' OR topic LIKE '%diag%'")


async def test_a_batch_loads_its_state_once_and_applies_events_in_order(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix))
    await processor.process(records(hub_env.topic_prefix, [("a", i, None) for i in range(5)] + [("b", 9, None)] * 2))
    assert LOADS == [["a", "b"]], "one load for the whole batch"
    assert await counts(pool) == {"a": 5, "b": 2}
    assert sorted(COMMITTED) == [0, 1, 2, 3, 4, 9, 9]


async def test_a_savepoint_undoes_the_state_the_events_and_the_callbacks_begun_in_it(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix))
    before = await pool.fetchval("SELECT count(*) FROM outbox")
    await processor.process(records(hub_env.topic_prefix, [("a", 1, None), ("a", 2, "undo"), ("a", 3, None)]))
    assert await counts(pool) == {"a": 2}
    assert await pool.fetchval("SELECT count(*) FROM outbox") - before == 2, "the undone ping's pong is not published"
    assert sorted(COMMITTED) == [1, 3]


async def test_the_careful_path_loads_per_event_and_counts_each_effect_once(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix))
    batch = records(hub_env.topic_prefix, [("a", 1, None), ("b", 2, "reject"), ("a", 3, None), ("a", 4, "undo")])
    await processor.process(batch)
    assert await counts(pool) == {"a": 2}
    assert LOADS[0] == ["a", "b"] and LOADS[1:] == [["a"], ["b"], ["a"], ["a"]], "optimistic try, then one load per event"
    assert sorted(COMMITTED) == [1, 3], "the optimistic attempt's callbacks were dropped with it"
    dead = await pool.fetchval("SELECT count(*) FROM dead_letter_log WHERE consumer = 'counter'")
    assert dead == 1
    # the same batch again (a crash before the offsets were committed): the inbox absorbs it, nothing loads
    LOADS.clear()
    await processor.process(batch)
    assert await counts(pool) == {"a": 2}
    assert LOADS == [["b"], ["b"]], "only the rejected ping (no inbox row) is tried again (optimistic, then careful)"
    assert await pool.fetchval("SELECT count(*) FROM dead_letter_log WHERE consumer = 'counter'") == 1


def test_a_handler_for_an_unknown_event_type_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="no event type"):
        Router().on("crm.tsak.upserted")


async def test_a_flush_the_database_refuses_falls_back_and_dead_letters_only_its_event(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix),
                               attempts=2)
    await processor.process(records(hub_env.topic_prefix, [("a", 1, None), ("unwritable", 2, None), ("a", 3, None)]))
    assert await counts(pool) == {"a": 2}
    assert sorted(COMMITTED) == [1, 3]
    codes = await pool.fetch("SELECT code, \"offset\" FROM dead_letter_log WHERE consumer = 'counter'")
    assert [(r["code"], r["offset"]) for r in codes] == [("handler_error", 1)]


async def test_a_batch_past_its_bound_commits_in_parts_each_event_once(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    """Issue 17: a batch's transaction does a bounded amount of work (here 3 emitted events); the rest of the batch
    goes on in new transactions with a fresh state, and every event still counts exactly once."""
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix),
                               bound=BatchBound(outbox_rows=3))
    cuts = BATCH_CUTS.labels("counter", "outbox_rows")._value.get()
    before = await pool.fetchval("SELECT count(*) FROM outbox")
    batch = records(hub_env.topic_prefix, [("a" if i % 2 else "b", i, None) for i in range(10)])
    await processor.process(batch)
    assert await counts(pool) == {"a": 5, "b": 5}
    assert len(LOADS) == 4, f"parts of 3, 3, 3 and 1 events, each with its own state: {LOADS}"
    assert sorted(COMMITTED) == list(range(10))
    assert await pool.fetchval("SELECT count(*) FROM outbox") - before == 10, "one pong per ping"
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'counter'") == 10
    assert BATCH_CUTS.labels("counter", "outbox_rows")._value.get() - cuts == 3
    # a crash after some parts committed replays the whole batch: the inbox absorbs every part
    await processor.process(batch)
    assert await counts(pool) == {"a": 5, "b": 5}
    assert await pool.fetchval("SELECT count(*) FROM outbox") - before == 10


async def test_the_careful_path_is_bounded_too(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    """A rejected event sends the batch down the careful path; it too commits after 2 emitted events and the rest
    of the batch is tried optimistically again."""
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix),
                               bound=BatchBound(outbox_rows=2))
    await processor.process(records(hub_env.topic_prefix, [("a", 1, None), ("b", 2, "reject"), ("a", 3, None),
                                                             ("a", 4, None), ("a", 5, None)]))
    assert await counts(pool) == {"a": 4}
    assert LOADS == [["a", "b"], ["a"], ["b"], ["a"], ["a"]], "optimistic, careful per event up to the cut, optimistic rest"
    assert sorted(COMMITTED) == [1, 3, 4, 5]
    assert await pool.fetchval("SELECT count(*) FROM dead_letter_log WHERE consumer = 'counter'") == 1


async def test_a_batch_past_its_time_bound_commits_in_parts(hub_env: HubEnv, pool: asyncpg.Pool) -> None:
    processor = BatchProcessor(pool, router, consumer="counter", producer="counter", topics=TopicNames(hub_env.topic_prefix),
                               bound=BatchBound(seconds=1e-9))
    await processor.process(records(hub_env.topic_prefix, [("a", i, None) for i in range(4)]))
    assert LOADS == [["a"]] * 4, "every event past the (tiny) time bound: one transaction each"
    assert await counts(pool) == {"a": 4}
    assert sorted(COMMITTED) == [0, 1, 2, 3]
