"""Builds a hub service: Kafka consumer with the inbox/outbox processor, relay, HTTP endpoints.

Every service's `main.py` is a few lines: its settings, its Router, the topics it
reads, its migrations folder, and its HTTP API (`api=`: a function of the service
returning a `hub_platform.http.HubApi`). The HTTP app is FastAPI: the common endpoints
(health, readiness, metrics, AsyncAPI) and the service's API are attached the same way,
and a service with an API serves its generated OpenAPI document at /api/v1/openapi.json. The ack policy is
MANUAL: offsets are committed only after `BatchProcessor.process` returned,
i.e. after the batch's database transaction committed (FastStream's Kafka
default would acknowledge before the handler runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from hub_platform import db, env_names, failpoints, metrics
from hub_platform.http import BodySizeLimit, HubApi, app_of, require_strong_tokens
from hub_platform.consumer import BatchBound, BatchProcessor, Router, partition_groups
from hub_platform.kafka_admin import ensure_topics
from hub_platform.logs import configure_logging, get_logger
from hub_platform.outbox import OutboxRelay
from hub_platform.retention import PLATFORM_RULES, Clock, RetentionJob, RetentionRule, system_clock
from hub_platform.settings import KafkaSettings, ServiceSettings
from hub_platform.telemetry import configure_tracing
from hub_schema import Payload
from hub_schema.topics import TopicNames

log = get_logger(__name__)

OPENAPI_PATH = "/api/v1/openapi.json"
WEDGED_EXIT_CODE = 75
"""EX_TEMPFAIL: the consumer's group client stopped answering (see KafkaSettings.commit_timeout_seconds)."""


def _security(kafka: KafkaSettings) -> BaseSecurity | None:
    import ssl

    ctx = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            ctx.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    if kafka.sasl_mechanism:
        user = kafka.sasl_username or ""
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[kafka.sasl_mechanism]
        return cls(username=user, password=password, ssl_context=ctx)
    if ctx is not None:
        return BaseSecurity(ssl_context=ctx)
    return None


def _tolerant_record(record: ConsumerRecord) -> ConsumerRecord:
    """FastStream decodes header values as UTF-8; a poison header must not kill the consumer."""
    try:
        for _, v in record.headers:
            v.decode()
        return record
    except UnicodeDecodeError:
        fixed = tuple((k, v.decode("utf-8", "replace").encode()) for k, v in record.headers)
        return dataclasses.replace(record, headers=fixed)


async def _parser(msg: tuple[ConsumerRecord, ...], original: Callable[..., Awaitable[Any]]) -> Any:
    """FastStream's batch message around the records, built from the first record only: its parser decodes every
    header of every record into dicts nobody reads here (the processor reads `raw_message`), which was ≈ 3% of
    the tasks service's CPU."""
    parsed = await original((_tolerant_record(msg[0]),))
    parsed.raw_message = msg
    return parsed


async def _decoder(msg: Any, original: Callable[..., Any]) -> Any:
    """Bodies are parsed by hub_schema in the processor; skip FastStream's JSON decoding."""
    return None


def _commit_failed(exc: BaseException) -> None:
    """A failed offset commit (a rebalance moved the partition) loses nothing: the next owner replays the batch."""
    log.warning("offset commit failed; the batch's next owner replays it (its inbox absorbs it)", error=repr(exc))


def poll_without_idle_sleep(subscriber: Any, kafka: KafkaSettings) -> None:
    """FastStream's batch subscriber sleeps `batch_timeout_ms` after every empty poll, on top of the poll's own
    wait of `batch_timeout_ms`: an event that arrives during the sleep waits for it, which was the larger part of
    the latency of a quiet stream (at 10 events/s: 33 ms from the event to the service's transaction, where a raw
    aiokafka consumer on the same broker reads it in 9 ms; bench/RESULTS.md). `getmany` already waits the full
    timeout when nothing arrives, so the sleep only adds delay; this poll returns as soon as records are fetched
    and loops at once after an empty poll.

    It also tops the batch up (`batch_topup_ms`). aiokafka fetches a partition again only once its buffered records
    are taken, so while a batch is handled each partition's first new records are fetched and the rest wait at the
    broker. A poll that returns at once found such a buffer, and without a second look the records that arrived
    during the previous batch would wait for one more batch: the second poll takes them (the fetch it triggers
    is answered at once when the broker holds records). A poll that had to wait was idle: nothing more to take."""
    from itertools import chain

    async def get_msg(consumer: Any) -> tuple[ConsumerRecord, ...]:
        started = time.monotonic()
        messages = await consumer.getmany(timeout_ms=kafka.batch_timeout_ms, max_records=kafka.batch_max_records)
        records = list(chain.from_iterable(messages.values()))
        room = kafka.batch_max_records - len(records)
        if records and room > 0 and kafka.batch_topup_ms and time.monotonic() - started < BUFFERED_POLL_SECONDS:
            try:
                more = await consumer.getmany(timeout_ms=kafka.batch_topup_ms, max_records=room)
            except Exception as exc:  # noqa: BLE001 - see below
                # the records taken already have moved the consumer's positions: raising here would skip them, and
                # a later batch's commit would step over them for good. They are handled; the error is only logged
                # (aiokafka itself returns what it drained and keeps an error for the next poll).
                log.warning("second poll of a batch failed; the batch goes on with what the first poll took",
                            error=repr(exc), records=len(records))
                return tuple(records)
            records.extend(chain.from_iterable(more.values()))  # later offsets of the same partitions: order holds
        return tuple(records)

    if not hasattr(subscriber, "get_msg"):
        raise TypeError(f"{type(subscriber).__name__} has no get_msg: FastStream changed; see poll_without_idle_sleep")
    subscriber.get_msg = get_msg


BUFFERED_POLL_SECONDS = 0.001
"""A poll that returned within this found records already fetched (a poll that waits for the broker takes longer)."""


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs what this replica owns after each rebalance and forgets the lag of the partitions it gave up (another
    replica reports them now; a stale value here would keep a lag alert firing)."""

    def __init__(self, service: HubService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.settle_commit()  # the last batch's offsets land before its partitions move
        # with "partitions assigned", each replica's ownership over time (the fault suite checks no two overlap)
        log.info("partitions revoked", count=len(revoked),
                 partitions=sorted(f"{self.service.topics.logical(tp.topic)}:{tp.partition}" for tp in revoked))
        for tp in revoked:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.service.name, self.service.topics.logical(tp.topic), str(tp.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", count=len(assigned),
                 partitions=sorted(f"{self.service.topics.logical(tp.topic)}:{tp.partition}" for tp in assigned))


class HubService:
    """One hub service process: consumer group `<topic prefix><service name>`, its schema, its relay."""

    def __init__(
        self,
        settings: ServiceSettings,
        router: Router,
        *,
        subscribe: Sequence[str],
        migrations: Path | Sequence[Path] | None,
        api: Callable[[HubService], HubApi] | None = None,
        title: str = "",
        on_started: Sequence[Callable[[HubService], Awaitable[None]]] = (),
        background: Sequence[Callable[[HubService], Awaitable[None]]] = (),
        emits: Sequence[type[Payload]] = (),
        retention: Sequence[RetentionRule] = (),
        clock: Clock = system_clock,
        tokens: dict[str, SecretStr | None] | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.name = settings.service_name
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.group_id = settings.kafka.group_id(self.name)
        self.subscribed = [self.topics(t) for t in subscribe]
        self.migrations = migrations
        self.extra_routes: list[BaseRoute] = []  # the service's API (HubApi routes only: one way to attach them)
        self.title = title or f"hub {self.name}"
        self.on_started = list(on_started)
        self.background = list(background)
        self.emits = list(emits)
        self.retention_rules = [*PLATFORM_RULES, *retention]
        self.clock = clock
        self.retention: RetentionJob | None = None
        self.tokens = dict(tokens or {})  # env name -> secret guarding an endpoint: checked before start
        self._tokens_checked = False
        self._background_tasks: list[asyncio.Task[None]] = []
        self._pending_commit: asyncio.Task[None] | None = None
        self._commit_in_background = settings.kafka.commit_in_background  # off once stopping
        self.pool: asyncpg.Pool | None = None
        self.started = False
        self.broker = KafkaBroker(
            # a list: FastStream hands a string to aiokafka as one host, "a:9092,b:9092" included
            [s.strip() for s in settings.kafka.bootstrap_servers.split(",") if s.strip()],
            security=_security(settings.kafka),
            graceful_timeout=settings.shutdown_grace_seconds,
            client_id=f"hub-{self.name}",
            logger=None,
            # Events go out through the relay's producer; should anything publish through the broker, it is as safe.
            acks="all",
            enable_idempotence=True,
        )
        self.relay = OutboxRelay(
            settings.db.url.get_secret_value(), settings.schema, settings.kafka, self.name,
            batch=settings.relay_batch, poll_seconds=settings.relay_poll_seconds,
        )
        self.processor: BatchProcessor | None = None
        self._register_subscriber()
        if api is not None:
            self.extra_routes.extend(api(self).routes)

    # -- consumer ---------------------------------------------------------------------------

    def _register_subscriber(self) -> None:
        subscriber = self.broker.subscriber(
            *self.subscribed,
            group_id=self.group_id,
            group_instance_id=self.settings.kafka.group_instance_id,
            session_timeout_ms=self.settings.kafka.session_timeout_ms,
            # the others learn of a rebalance (a replica joined or left) at their next heartbeat
            heartbeat_interval_ms=min(1000, self.settings.kafka.session_timeout_ms // 10),
            listener=_RebalanceListener(self),
            batch=True,
            max_records=self.settings.kafka.batch_max_records,
            batch_timeout_ms=self.settings.kafka.batch_timeout_ms,
            fetch_max_wait_ms=self.settings.kafka.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            parser=_parser,
            decoder=_decoder,
            title=f"{self.name}-ingest",
            description=f"Every event the {self.name} service handles: " + ", ".join(sorted(self.router.handlers)),
        )

        poll_without_idle_sleep(subscriber, self.settings.kafka)

        for model in self.emits:
            # Documentation only (AsyncAPI): events are published by the outbox relay.
            self.broker.publisher(
                self.topics(model.TOPIC), title=f"{self.name}:{model.EVENT_TYPE}.v{model.VERSION}",
                description=(model.__doc__ or "").strip(), schema=model,
            )

        @subscriber
        async def on_batch(body: Any, message: KafkaMessage) -> None:
            assert self.processor is not None, "service not started"
            groups = partition_groups(message.raw_message, self.settings.kafka.batch_concurrency)
            await asyncio.gather(*(self.processor.process(group) for group in groups))
            failpoints.hit("consumer.after_commit")
            await self._commit_offsets(message)
            self._record_lag(message)

    async def _commit_offsets(self, message: KafkaMessage) -> None:
        """Start committing the batch's offsets (explicit: each partition's last handled offset + 1) and return: the
        next batch is fetched and handled while the broker stores them. The commit before is awaited first, so
        commits land in order and at most one is in flight; a rebalance (`_RebalanceListener`) and a graceful stop
        await it too, so the partitions' next owner does not replay a batch that was handled.

        Awaiting each commit before the next poll cost ≈ 9 ms per batch, a fifth of a batch cycle at half load
        (bench/RESULTS.md). A commit that fails (a rebalance moved the partition) only means the next owner
        replays the batch, which its inbox absorbs: it is logged, as before.

        A commit that has not returned within `commit_timeout_seconds` means the group client is wedged: the process
        exits (WEDGED_EXIT_CODE) for its supervisor to restart; a replica that neither commits nor heartbeats has
        lost its partitions to the others already, and staying up would only look ready."""
        await self.settle_commit()
        offsets: dict[TopicPartition, int] = {}
        for record in message.raw_message:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        consumer = getattr(message, "consumer", None)
        if consumer is None or not offsets:
            return
        since = time.time()
        if self._commit_in_background:
            task = asyncio.create_task(self._commit(consumer, offsets))
            watchdog = asyncio.get_running_loop().call_later(self.settings.kafka.commit_timeout_seconds, self._wedged, since)
            task.add_done_callback(lambda _: watchdog.cancel())
            self._pending_commit = task
            return
        try:
            await asyncio.wait_for(self._commit(consumer, offsets), self.settings.kafka.commit_timeout_seconds)
        except asyncio.TimeoutError:
            self._wedged(since)
        except Exception as exc:
            _commit_failed(exc)

    async def settle_commit(self) -> None:
        """Wait for the offset commit in flight, if any (its watchdog bounds the wait)."""
        task, self._pending_commit = self._pending_commit, None
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except Exception as exc:
            _commit_failed(exc)

    def _wedged(self, since: float) -> None:
        log.error("ALERT consumer wedged: the offset commit did not return; exiting for a restart",
                  alert="consumer_wedged", since=datetime.fromtimestamp(since, timezone.utc).isoformat(),
                  timeout_seconds=self.settings.kafka.commit_timeout_seconds, exit_code=WEDGED_EXIT_CODE)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(WEDGED_EXIT_CODE)

    @staticmethod
    async def _commit(consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        await failpoints.stall("consumer.commit_stall")
        await consumer.commit(offsets)

    def _record_lag(self, message: Any) -> None:
        """Lag per partition = high watermark - next offset to read (no broker round trip)."""
        consumer = getattr(message, "consumer", None)
        if consumer is None or not hasattr(consumer, "highwater"):
            return
        last: dict[tuple[str, int], int] = {}
        for record in message.raw_message:
            last[(record.topic, record.partition)] = record.offset

        for (topic, partition), offset in last.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                metrics.CONSUMER_LAG.labels(self.name, self.topics.logical(topic), str(partition)).set(max(high - offset - 1, 0))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        configure_logging(self.name, s.obs.log_level, s.obs.log_format)
        configure_tracing(self.name, s.obs.otel_exporter, s.obs.otel_endpoint)
        self.warn_unread_variables()
        if not self._tokens_checked:
            require_strong_tokens(self.tokens, s.http_host)
        dsn = s.db.url.get_secret_value()
        if s.kafka.create_topics:
            await ensure_topics(s.kafka)
        await db.migrate_async(dsn, s.schema, self.migrations)
        self.pool = await db.create_pool(dsn, s.schema, min_size=s.db.pool_min, max_size=s.db.pool_max,
                                         statement_timeout_ms=s.db.statement_timeout_ms)
        self.processor = BatchProcessor(
            self.pool, self.router, consumer=self.name, producer=self.name, topics=self.topics,
            attempts=s.transient_retry_attempts, after_commit=self.relay.wake,
            bound=BatchBound(s.kafka.batch_max_outbox_rows, s.kafka.batch_max_seconds),
        )
        await self.relay.start()
        await self.broker.start()
        for hook in self.on_started:
            await hook(self)
        for job in self.background:
            self._background_tasks.append(asyncio.create_task(job(self)))
        self.retention = RetentionJob(self.pool, self.retention_rules, s.retention, clock=self.clock)
        self._background_tasks.append(asyncio.create_task(self.retention.run()))
        self.started = True
        log.info("service started", topics=self.subscribed, http=f"{s.http_host}:{s.http_port}")

    def warn_unread_variables(self) -> list[tuple[str, str | None]]:
        """A HUB_* variable nothing reads is most likely a typo that leaves a default in force: say so."""
        unread = env_names.unread_variables(type(self.settings), os.environ, env_names.other_services_names())
        for name, close in unread:
            log.warning("environment variable not read by this service", variable=name,
                        did_you_mean=close, hint="names are HUB_<FIELD> or HUB_<GROUP>__<FIELD> (two underscores)")
        return unread

    async def stop(self) -> None:
        """Graceful: the batch in hand finishes and commits, then the relay drains."""
        log.info("service stopping")
        self._commit_in_background = False  # the batch in hand commits before the consumer leaves
        await self.settle_commit()
        for task in self._background_tasks:
            task.cancel()
        for task in self._background_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.broker.stop()
        await self.relay.stop()
        if self.pool is not None:
            await self.pool.close()
        self.started = False
        log.info("service stopped")

    # -- HTTP ------------------------------------------------------------------------------

    def common_api(self) -> HubApi:
        """The endpoints every service serves, public on purpose (they name no org, task or address)."""
        api = HubApi()

        @api.get("/healthz", auth=None, summary="alive")
        async def healthz() -> dict[str, Any]:
            return {"status": "alive", "service": self.name}

        @api.get("/readyz", auth=None, summary="Kafka, database and processing all fine (503 otherwise)")
        async def readyz() -> Response:
            checks: dict[str, bool] = {"started": self.started}
            try:
                checks["kafka"] = bool(await self.broker.ping(timeout=2))
            except Exception:
                checks["kafka"] = False
            try:
                assert self.pool is not None
                async with self.pool.acquire(timeout=2) as conn:
                    checks["database"] = await conn.fetchval("SELECT true")
            except Exception:
                checks["database"] = False
            checks["processing"] = bool(self.processor and self.processor.healthy)
            ok = all(checks.values())
            return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

        @api.get("/metrics", auth=None, summary="Prometheus metrics")
        async def metrics_() -> Response:
            return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

        @api.get("/asyncapi.json", auth=None, summary="the service's AsyncAPI document")
        async def asyncapi() -> Response:
            return Response(self.asyncapi_json(), media_type="application/json")

        return api

    def asyncapi_json(self) -> str:
        from faststream.specification import AsyncAPI

        return AsyncAPI(self.broker, title=self.title, version="1.0.0", schema_version="3.0.0").to_specification().to_json()

    @property
    def has_api(self) -> bool:
        """Whether the service serves more than the common endpoints (then it has an OpenAPI document)."""
        return bool(self.extra_routes)

    def http_app(self, *, lifespan: Any = None) -> FastAPI:
        """The HTTP app: common endpoints, the service's API, the body-size limit (tests serve it without lifespan)."""
        return app_of([*self.common_api().routes, *self.extra_routes], title=self.title,
                      openapi_url=OPENAPI_PATH if self.has_api else None, lifespan=lifespan,
                      middleware=[Middleware(BodySizeLimit, max_bytes=self.settings.http_max_body_bytes)])

    def openapi(self) -> dict[str, Any]:
        """The generated OpenAPI document served at /api/v1/openapi.json."""
        return self.http_app().openapi()

    def asgi(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        return self.http_app(lifespan=lifespan)

    def run(self) -> None:
        """Entry point: serve HTTP and consume until SIGTERM/SIGINT, then stop gracefully."""
        require_strong_tokens(self.tokens, self.settings.http_host)  # before binding a port
        self._tokens_checked = True
        uvicorn.run(
            self.asgi(), host=self.settings.http_host, port=self.settings.http_port,
            log_level="warning", access_log=False, timeout_graceful_shutdown=int(self.settings.shutdown_grace_seconds),
            loop="uvloop",  # libuv's event loop: less CPU per callback than asyncio's own (asyncpg, aiokafka and the relay share it)
        )
