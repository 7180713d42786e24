"""Handling a batch of Kafka records: inbox, handler, outbox and dead letters in one transaction.

Why it is shaped like this:
- the offset is committed only after the batch's transaction committed, so a
  crash anywhere replays the batch, and the inbox makes the replay harmless;
- each event runs inside a savepoint, so one failing event is dead-lettered
  without undoing the others, and the partition keeps flowing;
- the savepoints cost two round trips per event, so a batch is first tried
  optimistically without them: inbox rows for the whole batch in one INSERT,
  handlers in record order, the outbox rows written with one pipelined
  `executemany` before the commit (same transaction, same id order). If any
  handler raises, that attempt is rolled back entirely and the batch is run
  again the careful way (savepoint per event, retries, dead letters), so the
  guarantees do not change: inbox per event, outbox in the same transaction,
  order per key, offsets only after the commit (see `bench/RESULTS.md`);
- a batch's work is bounded (`BatchBound`): past so many emitted events or
  seconds the part handled so far commits and the rest goes on in a new
  transaction, so one batch never holds a partition long after its session;
- an outage of the database restarts the whole batch with backoff, forever:
  a message is never dead-lettered because the service could not reach its
  database (that would lose good work), only because of the message itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import asyncpg
import structlog
from opentelemetry import trace

from hub_platform import metrics
from hub_platform.logs import get_logger, redact_text
from hub_platform.outbox import OutboxRow, write_outbox, write_outbox_rows
from hub_platform.telemetry import context_from_headers, current_trace_headers, tracer
from hub_schema import Envelope, Event, InvalidEvent, Payload, encode, make_event, parse_event
from hub_schema.envelope import Origin
from hub_schema.registry import lookup
from hub_schema.topics import DEAD_LETTERS, TopicNames

log = get_logger(__name__)

OPTIMISTIC_FALLBACKS = metrics.Counter(
    "hub_batch_optimistic_fallbacks_total", "Batches re-run with one savepoint per event because a handler raised",
    ["consumer"], registry=metrics.REGISTRY,
)

BATCH_CUTS = metrics.Counter(
    "hub_batch_cuts_total", "Batches committed in parts: the events so far had emitted too many events or taken too long",
    ["consumer", "bound"], registry=metrics.REGISTRY,
)

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InternalClientError,
)


YIELD_EVERY = 50
"""On the optimistic path the handlers change in-memory state and rarely wait; every this many events the batch
lets the event loop run the relay, the other partition group and the HTTP API, which would otherwise wait for
the whole batch's CPU (measured: the relay's share of the latency was the batch's length)."""


class DatabaseUnresponsive(ConnectionError):
    """A statement timed out and the database did not answer a trivial query either: an outage, not the message
    (a ConnectionError, so one of the INFRASTRUCTURE_ERRORS: the batch is retried, nothing is dead-lettered)."""


class PermanentError(Exception):
    """The event can never succeed (failed a domain rule or validation): dead-letter it with `reason`."""

    def __init__(self, reason: str, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Record(Protocol):
    """What we read of a Kafka record (aiokafka's ConsumerRecord satisfies it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int


@dataclass(frozen=True)
class BatchBound:
    """How much one transaction of a batch may do before it commits and the rest goes on in a new one.

    A batch's work is otherwise unbounded: 500 events that each fan out to hundreds of commands made one
    transaction of 790,000 outbox rows in the fault suite, which outlived the consumer's session (the group gave
    the partition to another replica meanwhile; the inbox kept effects single, but the relay drowned). Cutting
    is safe because offsets are committed only after the last part and the inbox absorbs whatever a crash
    between the parts replays."""

    outbox_rows: int = 5000
    seconds: float = 5.0

    def reached(self, rows: int, started: float) -> str | None:
        """Which bound the work so far has reached, if any."""
        if rows >= self.outbox_rows:
            return "outbox_rows"
        if time.perf_counter() - started >= self.seconds:
            return "seconds"
        return None


@dataclass
class HandlerContext:
    """What a handler gets besides the event: its transaction and a way to emit events."""

    conn: asyncpg.Connection
    event: Event[Any]
    consumer: str
    producer: str
    topics: TopicNames
    emitted: list[Envelope] = field(default_factory=list)
    outbox: list[OutboxRow] | None = None  # set on the optimistic batch path: rows are written at its end
    state: Any = None
    """The service's `BatchState` for this batch (None if its router has no `state` loader)."""
    committed: list[Callable[[], None]] = field(default_factory=list)
    trace_headers: dict[str, str] | None = None
    """The handler span's traceparent, made at the first emit (the span does not change within a handler;
    propagating it per emitted event was ~9% of the tasks service's CPU)."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the batch's transaction committed (metrics, logs that must not count a retry twice);
        dropped if the work it belongs to is rolled back (a savepoint, a retried attempt, the optimistic fallback)."""
        self.committed.append(callback)

    @property
    def log(self) -> structlog.stdlib.BoundLogger:
        return log

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A part of the handler that is undone as a whole if it raises: its database changes and its events.

        The one way a handler rolls part of its work back (a refusal, a retried step): on the optimistic
        batch path emitted events wait in the batch's outbox list, not in the database, so a plain
        `conn.transaction()` would roll back the rows and still publish what was emitted inside it.
        The exception propagates; the caller decides what the refusal or failure becomes.
        """
        emitted_mark = len(self.emitted)
        outbox_mark = len(self.outbox) if self.outbox is not None else 0
        committed_mark = len(self.committed)
        snapshot = self.state.snapshot() if isinstance(self.state, BatchState) else None
        try:
            async with self.conn.transaction():
                yield
        except BaseException:
            del self.emitted[emitted_mark:]
            if self.outbox is not None:
                del self.outbox[outbox_mark:]
            del self.committed[committed_mark:]
            if snapshot is not None:
                self.state.restore(snapshot)
            raise

    async def emit(
        self,
        payload: Payload,
        *,
        entity_key: str,
        org_id: str | None = None,
        origin: Origin | None = None,
        topic: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        """Write an event caused by the one being handled to the outbox (same transaction)."""
        incoming = self.event.envelope
        envelope = make_event(
            payload,
            org_id=org_id or incoming.org_id,
            entity_key=entity_key,
            producer=self.producer,
            origin=origin or incoming.origin,
            correlation_id=incoming.correlation_id,
            causation_id=incoming.event_id,
            event_id=event_id,
            trusted=True,
        )
        if self.trace_headers is None:
            self.trace_headers = current_trace_headers()
        row = OutboxRow(self.topics(topic or type(payload).TOPIC), entity_key, self.trace_headers, encode(envelope),
                        envelope.event_id)
        if self.outbox is not None:
            self.outbox.append(row)
        else:
            await write_outbox(self.conn, topic=row.topic, key=row.key, value=row.value, headers=row.headers,
                               event_id=row.event_id)
        self.emitted.append(envelope)
        return envelope


Handler = Callable[[HandlerContext, Event[Any]], Awaitable[None]]


@runtime_checkable
class BatchState(Protocol):
    """A service's state for every key of a batch: loaded set-based before its handlers run (one query per
    table, `= ANY($1)`), changed in memory by the handlers in record order, written back in bulk by `flush`.

    `snapshot`/`restore` let `HandlerContext.savepoint()` undo the in-memory changes of a refused part
    together with its rows and events. The careful path (one savepoint per event) loads a state for one
    event at a time, so the same handlers run on both paths.
    """

    async def flush(self, conn: asyncpg.Connection) -> None: ...

    def snapshot(self) -> Any: ...

    def restore(self, snapshot: Any) -> None: ...


StateLoader = Callable[[asyncpg.Connection, Sequence[Event[Any]]], Awaitable[BatchState]]


class Router:
    """Maps event types to the handler a service runs for them; optionally loads the service's batch state."""

    def __init__(self, state: StateLoader | None = None) -> None:
        self.handlers: dict[str, Handler] = {}
        self.state = state

    def on(self, *payloads: type[Payload] | str) -> Callable[[Handler], Handler]:
        """Register a handler by payload class (`@router.on(crm.CrmTaskUpserted)`): a misspelt class does not
        import, and a misspelt type string is refused here instead of turning silently into "ignored"."""
        event_types = [p if isinstance(p, str) else p.event_type_and_version()[0] for p in payloads]
        for event_type in event_types:
            if lookup(event_type, None) is None:
                raise ValueError(f"no event type {event_type!r} in the schema registry")

        def register(fn: Handler) -> Handler:
            for event_type in event_types:
                if event_type in self.handlers:
                    raise ValueError(f"two handlers for {event_type}")
                self.handlers[event_type] = fn
            return fn

        return register

    def include(self, other: Router) -> None:
        if other.state is not None:
            raise ValueError("an included router cannot bring its own batch state (the including router loads it)")
        for event_type, fn in other.handlers.items():
            if event_type in self.handlers:
                raise ValueError(f"two handlers for {event_type}")
            self.handlers[event_type] = fn

    async def load_state(self, conn: asyncpg.Connection, events: Sequence[Event[Any]]) -> BatchState | None:
        return await self.state(conn, events) if self.state is not None and events else None


def _run_callbacks(callbacks: Sequence[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception as exc:  # a metric or a log line must not fail a committed batch
            log.warning("after-commit callback failed", error=repr(exc))


def dead_letter_headers(record: Record, consumer: str, code: str, reason: str, attempts: int) -> dict[str, str]:
    original = {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
    return {
        **{f"x-original-{k}": v for k, v in original.items()},
        **{k: v for k, v in original.items() if k in ("traceparent", "tracestate")},
        "x-dlq-consumer": consumer,
        "x-dlq-code": code,
        "x-dlq-reason": reason[:2000],
        "x-dlq-attempts": str(attempts),
        "x-dlq-topic": record.topic,
        "x-dlq-partition": str(record.partition),
        "x-dlq-offset": str(record.offset),
        "x-dlq-key": (record.key or b"").decode("utf-8", "replace"),
        "x-dlq-at": str(int(time.time() * 1000)),
    }


def partition_groups(records: Sequence[Record], groups: int) -> list[list[Record]]:
    """Split a fetched batch into at most `groups` lists, whole partitions each and in record order within each,
    balanced by record count (the largest partitions placed first, each on the lightest group)."""
    by_partition: dict[tuple[str, int], list[Record]] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition), []).append(record)
    if groups <= 1 or len(by_partition) <= 1:
        return [list(records)] if records else []
    out: list[list[Record]] = [[] for _ in range(min(groups, len(by_partition)))]
    for part in sorted(by_partition.values(), key=len, reverse=True):
        min(out, key=len).extend(part)
    return out


class BatchProcessor:
    """Runs a service's handlers over batches of records with exactly-once effects."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        router: Router,
        *,
        consumer: str,
        producer: str,
        topics: TopicNames,
        attempts: int = 5,
        after_commit: Callable[[], None] | None = None,
        optimistic: bool = True,
        bound: BatchBound = BatchBound(),
    ) -> None:
        self.pool = pool
        self.bound = bound
        self.router = router
        self.consumer = consumer
        self.producer = producer
        self.topics = topics
        self.attempts = attempts
        self.after_commit = after_commit or (lambda: None)
        self.optimistic = optimistic
        self.healthy = True
        self._latency = metrics.LATENCY.labels(consumer)

    async def process(self, records: Iterable[Record]) -> None:
        """Handle the batch; returns only once every record is committed or dead-lettered."""
        parsed: list[tuple[Record, Event[Any] | InvalidEvent]] = []
        for record in records:
            try:
                parsed.append((record, self._decode(record)))
            except InvalidEvent as exc:
                parsed.append((record, exc))
        if not parsed:
            return
        started = time.perf_counter()
        backoff = 0.1
        remaining = parsed
        while remaining:
            try:
                done = await self._process_optimistic(remaining) if self.optimistic else 0
                if not done:
                    done = await self._process_careful(remaining)
                remaining = remaining[done:]
                self.healthy = True
                if remaining:
                    self.after_commit()  # the relay publishes the committed part while the rest is handled
            except INFRASTRUCTURE_ERRORS as exc:
                self.healthy = False
                metrics.INFRA_RETRIES.labels(self.consumer).inc()
                log.warning("database unavailable, retrying batch", error=repr(exc), retry_in=backoff, records=len(remaining))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        metrics.BATCH_SECONDS.labels(self.consumer).observe(time.perf_counter() - started)
        self.after_commit()

    def _cut_here(self, position: int, total: int, rows: int, started: float) -> bool:
        """True if the part handled so far (up to `position`) is to be committed on its own (see BatchBound)."""
        if position >= total - 1:
            return False
        bound = self.bound.reached(rows, started)
        if bound is None:
            return False
        BATCH_CUTS.labels(self.consumer, bound).inc()
        log.info("batch committed in parts", bound=bound, handled=position + 1, records=total, outbox_rows=rows)
        return True

    async def _process_careful(self, parsed: list[tuple[Record, Event[Any] | InvalidEvent]]) -> int:
        """One savepoint per event, in one transaction; returns how many records it committed (all but the ones
        after a cut)."""
        committed: list[Callable[[], None]] = []
        started = time.perf_counter()
        rows = 0
        done = len(parsed)
        async with self.pool.acquire() as conn, conn.transaction():
            for position, (record, item) in enumerate(parsed):
                if isinstance(item, InvalidEvent):
                    await self._dead_letter(conn, record, item.code, item.reason, 1)
                elif item.event_type in self.router.handlers:
                    rows += await self._handle_one(conn, record, item, committed)
                else:
                    metrics.IGNORED.labels(self.consumer).inc()
                if self._cut_here(position, len(parsed), rows, started):
                    done = position + 1
                    break
        _run_callbacks(committed)
        return done

    def _decode(self, record: Record) -> Event[Any]:
        """Parse a record and check it arrived on its event type's own topic (the catalog's); routing is by type,
        so a type read from another topic would let whoever may write that topic speak for another producer."""
        return parse_event(record.value, topic=self.topics.logical(record.topic))

    async def _process_optimistic(self, parsed: list[tuple[Record, Event[Any] | InvalidEvent]]) -> int:
        """The batch in one transaction without savepoints; returns how many records it committed (all, or the ones
        before a cut), 0 (and nothing committed) if a handler raised.

        Infrastructure errors propagate (the caller retries the batch with backoff, as for the careful path).
        """
        handled = [(r, e) for r, e in parsed if not isinstance(e, InvalidEvent) and e.event_type in self.router.handlers]
        outbox: list[OutboxRow] = []
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                new: set[uuid.UUID] = set()
                if handled:
                    rows = await conn.fetch(
                        "INSERT INTO inbox (consumer, event_id, event_type) "
                        "SELECT $1, e, t FROM unnest($2::uuid[], $3::text[]) AS x(e, t) "
                        "ON CONFLICT DO NOTHING RETURNING event_id",
                        self.consumer, [e.event_id for _, e in handled], [e.event_type for _, e in handled],
                    )
                    new = {r["event_id"] for r in rows}
                done: collections.Counter[str] = collections.Counter()  # event types handled, for the metric
                committed: list[Callable[[], None]] = []
                seen: set[uuid.UUID] = set()
                to_handle = [e for _, e in handled if e.event_id in new and not (e.event_id in seen or seen.add(e.event_id))]
                try:
                    state = await self.router.load_state(conn, to_handle)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as exc:  # a deadlock, a bug: the careful path loads per event and finds the culprit
                    log.info("optimistic batch falls back to one savepoint per event (state load failed)", error=repr(exc))
                    OPTIMISTIC_FALLBACKS.labels(self.consumer).inc()
                    await tx.rollback()
                    return 0
                started = time.perf_counter()
                stop = len(parsed)
                for position, (record, item) in enumerate(parsed):
                    if position % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)
                    if isinstance(item, InvalidEvent):
                        await self._dead_letter(conn, record, item.code, item.reason, 1, outbox)
                    elif item.event_type not in self.router.handlers:
                        metrics.IGNORED.labels(self.consumer).inc()
                    elif item.event_id not in new:
                        metrics.SKIPPED.labels(self.consumer).inc()
                        log.debug("duplicate event absorbed by inbox", event_id=str(item.event_id))
                    else:
                        new.discard(item.event_id)  # the same event twice in one batch: handled once
                        if not await self._run_handler(conn, record, item, outbox, state, committed):
                            await tx.rollback()
                            return 0
                        done[item.event_type] += 1
                    if self._cut_here(position, len(parsed), len(outbox), started):
                        stop = position + 1
                        break
                if new and stop < len(parsed):
                    # the events after the cut were entered in the inbox up front: take them out, the next part has them
                    await conn.execute("DELETE FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
                                       self.consumer, list(new))
                if state is not None:
                    try:
                        await state.flush(conn)
                    except INFRASTRUCTURE_ERRORS:
                        raise
                    except Exception as exc:  # a constraint or a timeout in the bulk write: find the event the careful way
                        log.info("optimistic batch falls back to one savepoint per event (flush failed)", error=repr(exc))
                        OPTIMISTIC_FALLBACKS.labels(self.consumer).inc()
                        await tx.rollback()
                        return 0
                await write_outbox_rows(conn, outbox)
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            await tx.commit()
        for event_type, count in done.items():  # per type, not per event (a labelled child is a lookup and a lock)
            metrics.PROCESSED.labels(self.consumer, event_type).inc(count)
        _run_callbacks(committed)
        return stop

    async def _run_handler(self, conn: asyncpg.Connection, record: Record, event: Event[Any], outbox: list[OutboxRow],
                           state: BatchState | None, committed: list[Callable[[], None]]) -> bool:
        """One handler call of the optimistic path (same span and log context as the careful path)."""
        env = event.envelope
        structlog.contextvars.bind_contextvars(
            event_id=str(env.event_id), event_type=env.event_type, correlation_id=str(env.correlation_id), org_id=env.org_id,
        )
        started = time.perf_counter()
        try:
            with tracer().start_as_current_span(
                f"{self.consumer} handle {env.event_type}", context=context_from_headers(record.headers),
                kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": record.topic,
                            "messaging.kafka.offset": record.offset, "hub.event_id": str(env.event_id)},
            ):
                ctx = HandlerContext(conn=conn, event=event, consumer=self.consumer, producer=self.producer,
                                     topics=self.topics, outbox=outbox, state=state, committed=committed)
                try:
                    await self.router.handlers[event.event_type](ctx, event)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as exc:  # PermanentError included: the careful path decides what to do with it
                    log.info("optimistic batch falls back to one savepoint per event", error=repr(exc))
                    OPTIMISTIC_FALLBACKS.labels(self.consumer).inc()
                    return False
            self._latency.observe(time.perf_counter() - started)
            return True
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "event_type", "correlation_id", "org_id")

    async def _handle_one(self, conn: asyncpg.Connection, record: Record, event: Event[Any],
                          committed: list[Callable[[], None]]) -> int:
        """The careful path's one event, in a savepoint with retries; returns how many events it emitted."""
        handler = self.router.handlers[event.event_type]
        env = event.envelope
        structlog.contextvars.bind_contextvars(
            event_id=str(env.event_id), event_type=env.event_type, correlation_id=str(env.correlation_id), org_id=env.org_id,
        )
        try:
            attempt = 0
            while True:
                attempt += 1
                started = time.perf_counter()
                span_ctx = context_from_headers(record.headers)
                with tracer().start_as_current_span(
                    f"{self.consumer} handle {env.event_type}", context=span_ctx, kind=trace.SpanKind.CONSUMER,
                    attributes={"messaging.system": "kafka", "messaging.destination.name": record.topic,
                                "messaging.kafka.offset": record.offset, "hub.event_id": str(env.event_id)},
                ) as span:
                    try:
                        async with conn.transaction():
                            first_time = await conn.fetchval(
                                "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) "
                                "ON CONFLICT DO NOTHING RETURNING true",
                                self.consumer, env.event_id, env.event_type,
                            )
                            if not first_time:
                                metrics.SKIPPED.labels(self.consumer).inc()
                                log.debug("duplicate event absorbed by inbox")
                                return 0
                            state = await self.router.load_state(conn, [event])
                            ctx = HandlerContext(conn=conn, event=event, consumer=self.consumer, producer=self.producer,
                                                 topics=self.topics, state=state)
                            await handler(ctx, event)
                            if state is not None:
                                await state.flush(conn)
                        committed.extend(ctx.committed)
                        metrics.PROCESSED.labels(self.consumer, env.event_type).inc()
                        metrics.LATENCY.labels(self.consumer).observe(time.perf_counter() - started)
                        return len(ctx.emitted)
                    except PermanentError as exc:
                        span.record_exception(exc)
                        await self._dead_letter(conn, record, exc.code, exc.reason, attempt)
                        return 0
                    except INFRASTRUCTURE_ERRORS:
                        raise
                    except asyncpg.exceptions.QueryCanceledError as exc:
                        span.record_exception(exc)
                        await self._database_answers(conn)
                        metrics.FAILED.labels(self.consumer, env.event_type).inc()
                        log.warning("statement timed out", error=repr(exc), attempt=attempt)
                        if attempt >= self.attempts:
                            await self._dead_letter(conn, record, "statement_timeout",
                                                    f"a statement of the handler was cancelled on each of {attempt} "
                                                    f"attempts ({exc}) while the database answered", attempt)
                            return 0
                    except Exception as exc:
                        span.record_exception(exc)
                        metrics.FAILED.labels(self.consumer, env.event_type).inc()
                        log.warning("handler failed", error=repr(exc), attempt=attempt, exc_info=attempt >= self.attempts)
                        if attempt >= self.attempts:
                            await self._dead_letter(conn, record, "handler_error", f"{type(exc).__name__}: {exc}", attempt)
                            return 0
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "event_type", "correlation_id", "org_id")

    async def _database_answers(self, conn: asyncpg.Connection) -> None:
        """After a statement timeout: if `SELECT 1` fails too, the database is the problem (retry the batch, never
        dead-letter); if it answers, the timeout was the message's own statement and counts as a failed attempt."""
        try:
            await conn.fetchval("SELECT 1")
        except (asyncpg.exceptions.QueryCanceledError, *INFRASTRUCTURE_ERRORS) as exc:
            raise DatabaseUnresponsive(f"the database did not answer after a statement timeout: {exc!r}") from exc

    async def _dead_letter(self, conn: asyncpg.Connection, record: Record, code: str, reason: str, attempts: int,
                           outbox: list[OutboxRow] | None = None) -> None:
        reason = redact_text(reason)  # the reason is read by operators and kept: no e-mail addresses in it
        first_time = await conn.fetchval(
            'INSERT INTO dead_letter_log (consumer, topic, "partition", "offset", code, reason) '
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
            self.consumer, record.topic, record.partition, record.offset, code, reason[:2000],
        )
        if not first_time:
            log.info("already dead-lettered (a replayed batch)", topic=record.topic, partition=record.partition, offset=record.offset)
            return
        metrics.DEAD_LETTERED.labels(self.consumer, code).inc()
        log.warning("dead-lettered", code=code, reason=reason, topic=record.topic, partition=record.partition, offset=record.offset)
        row = OutboxRow(self.topics(DEAD_LETTERS), self.consumer, dead_letter_headers(record, self.consumer, code, reason, attempts),
                        record.value or b"", None)
        if outbox is not None:
            outbox.append(row)
            return
        await write_outbox(conn, topic=row.topic, key=row.key, value=row.value, headers=row.headers)
