"""pytest fixtures: real Kafka and PostgreSQL for integration tests, never a fake.

Where a Docker engine answers, testcontainers starts Kafka (KRaft) and
PostgreSQL; elsewhere the same fixtures start the local servers from
hub_devstack. Servers already running can be reused by setting
HUB_TEST_KAFKA_BOOTSTRAP and HUB_TEST_PG_ADMIN_DSN. A server that cannot be
started fails the run loudly; no test skips for lack of infrastructure.

Isolation: every test that asks for `hub_env` gets its own topic prefix and its
own database, so tests never see each other's messages or rows.

Security: the local broker the fixtures start is secured like `make up`'s (SASL/SCRAM, one
principal per service and connector, ACLs from the topic catalog; HUB_LOCAL_KAFKA_SECURITY=PLAINTEXT
turns that off). Each service then connects as its own principal, a test acting upstream as the
connector (or UI) principal, and the admin only creates and deletes the test's topics and ACLs.
A broker given by HUB_TEST_KAFKA_BOOTSTRAP or testcontainers is PLAINTEXT. Tests of the security
itself ask for `secured_kafka`, which is always a secured broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub_devstack.kafka import KafkaAccess
from hub_platform.settings import KafkaSettings

SERVICES = ("identity", "linking", "tasks", "notifications", "sandbox")
ADMIN = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_dir(name: str) -> Path:
    """A private folder for a session's server: not under pytest's basetemp, which a concurrent
    pytest run may rotate away (it keeps only the newest three) while our server still uses it."""
    return Path(tempfile.mkdtemp(prefix=f"synchub-test-{name}-"))


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


class TestKafka(KafkaAccess):
    """The test broker: where it is and, when secured, every principal's SCRAM password."""

    __test__ = False  # not a test class, whatever its name


def _start_local_kafka(secured: bool, brokers: int = 1) -> tuple[Any, TestKafka]:
    """A private broker (or `brokers` nodes) for the session, secured like `make up`'s or not."""
    from hub_devstack.kafka import KafkaCluster, KafkaServer
    from hub_devstack.stack import sasl_users

    # Every test makes its own prefixed topics (deleted again at its end); a larger heap than
    # `make up`'s keeps a long run's metadata comfortable.
    workdir = _server_dir("kafka")
    users = sasl_users(workdir, "SASL_PLAINTEXT" if secured else "PLAINTEXT")
    server: Any
    if brokers > 1:
        server = KafkaCluster(workdir, [free_port() for _ in range(brokers)], [free_port() for _ in range(brokers)],
                              heap="512m", sasl_users=users)
    else:
        server = KafkaServer(workdir, port=free_port(), controller_port=free_port(), heap="768m", sasl_users=users)
    server.start()
    return server, TestKafka(server.bootstrap_servers, users)


@pytest.fixture(scope="session")
def test_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestKafka]:
    if os.environ.get("HUB_TEST_KAFKA_BOOTSTRAP"):
        yield TestKafka(os.environ["HUB_TEST_KAFKA_BOOTSTRAP"])
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield TestKafka(kafka.get_bootstrap_server())
        return
    from hub_devstack.settings import DevstackSettings

    cfg = DevstackSettings()  # HUB_LOCAL_KAFKA_SECURITY, HUB_LOCAL_KAFKA_BROKERS (KAFKA_BROKERS=3 make test)
    server, kafka = _start_local_kafka(cfg.kafka_security != "PLAINTEXT", cfg.kafka_brokers)
    try:
        yield kafka
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def secured_kafka(request: pytest.FixtureRequest) -> Iterator[TestKafka]:
    """A broker with SASL/SCRAM and the StandardAuthorizer: the session's own, or a private one when that is PLAINTEXT."""
    if not os.environ.get("HUB_TEST_KAFKA_BOOTSTRAP") and not docker_engine_answers():
        shared: TestKafka = request.getfixturevalue("test_kafka")
        if shared.secured:
            yield shared
            return
    server, kafka = _start_local_kafka(True)
    try:
        yield kafka
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(test_kafka: TestKafka) -> str:
    """The test broker's address (connecting to a secured one needs `test_kafka`'s credentials too)."""
    return test_kafka.bootstrap


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("HUB_TEST_PG_ADMIN_DSN"):
        yield os.environ["HUB_TEST_PG_ADMIN_DSN"]
        return
    if docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as pg:
            yield pg.get_connection_url()
        return
    from hub_devstack.postgres import PostgresServer

    workdir = _server_dir("pg")
    server = PostgresServer(workdir / "data", port=free_port(), fsync=False)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class HubEnv:
    """One test's slice of the real infrastructure: a topic prefix, a database, a DSN per service."""

    bootstrap: str
    admin_dsn: str
    database: str
    topic_prefix: str
    dsns: dict[str, str] = field(default_factory=dict)
    kafka: TestKafka | None = None

    def topic(self, logical: str) -> str:
        return f"{self.topic_prefix}{logical}"

    @property
    def test_kafka(self) -> TestKafka:
        return self.kafka or TestKafka(self.bootstrap)

    def kafka_settings(self, principal: str) -> KafkaSettings:
        """Connect as `principal` (a service, "crm-connector", "pm-connector", "ui", "sandbox", "admin") to this test's topics."""
        return self.test_kafka.settings(principal, self.topic_prefix)

    def client_options(self, principal: str) -> dict[str, Any]:
        return self.kafka_settings(principal).client_options()

    def kafka_env(self, principal: str) -> dict[str, str]:
        return self.test_kafka.service_env(principal)

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """Environment variables a service process (or its settings class) reads; on a secured broker
        the service connects as its own principal (the one named like it)."""
        return {
            "HUB_SERVICE_NAME": service,
            **self.kafka_env(service),
            "HUB_KAFKA__TOPIC_PREFIX": self.topic_prefix,
            "HUB_DB__URL": self.dsns[service],
            "HUB_HTTP_PORT": str(free_port()),
            "HUB_OBS__LOG_LEVEL": "info",
            "HUB_RELAY_POLL_SECONDS": "0.2",
            **extra,
        }

    def settings(self, settings_cls: type, service: str, **extra: str) -> Any:
        """Build a settings object as the service would from its environment."""
        with patched_env(self.env(service, **extra)):
            return settings_cls()


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def secure_prefix(kafka: KafkaAccess, prefix: str) -> None:
    """As the admin: the catalog's topics under `prefix` and the ACLs the catalog gives each principal on them."""
    await kafka.secure(prefix)


async def unsecure_prefix(kafka: KafkaAccess, prefix: str) -> None:
    """Remove the prefix's topics and their ACLs."""
    await kafka.unsecure(prefix)


@pytest.fixture
async def hub_env(test_kafka: TestKafka, pg_admin_dsn: str) -> AsyncIterator[HubEnv]:
    from hub_devstack.provision import create_database, drop_database, provision_service

    database = f"t_{uuid.uuid4().hex[:10]}"
    await create_database(pg_admin_dsn, database)
    env = HubEnv(test_kafka.bootstrap, pg_admin_dsn, database, f"t{uuid.uuid4().hex[:8]}.", kafka=test_kafka)
    for service in SERVICES:
        env.dsns[service] = await provision_service(pg_admin_dsn, database, service, service)
    await test_kafka.secure(env.topic_prefix)
    yield env
    with contextlib.suppress(Exception):
        await test_kafka.unsecure(env.topic_prefix)
    with contextlib.suppress(Exception):
        await drop_database(pg_admin_dsn, database)


@contextlib.asynccontextmanager
async def running(service: Any) -> AsyncIterator[Any]:
    """Start a HubService in this event loop and stop it gracefully afterwards."""
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


class _MergedReader:
    """Several consumers (one per principal) read as one: `getmany` merges their batches."""

    def __init__(self, consumers: list[Any]) -> None:
        self.consumers = consumers

    async def getmany(self, timeout_ms: int = 0, **kwargs: Any) -> dict[Any, list[Any]]:
        out: dict[Any, list[Any]] = {}
        share = max(timeout_ms // len(self.consumers), 1) if timeout_ms else 0
        for consumer in self.consumers:
            out.update(await consumer.getmany(timeout_ms=share, **kwargs))
        return out

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()


class KafkaProbe:
    """Produces envelopes to and reads messages from the test's topics on the real broker.

    On a secured broker it acts as whoever the catalog lets do it: a test writing `crm.ingest`
    is the CRM connector, one writing `linking.events` stands in for the linking service; a
    reader of `pm.commands` is the PM connector (reading without a consumer group)."""

    def __init__(self, env: HubEnv) -> None:
        self.env = env
        self._producers: dict[str, Any] = {}
        self._consumers: list[Any] = []

    def _principal(self, pick: Callable[[str], str], logical_topic: str) -> str:
        return pick(logical_topic) if self.env.test_kafka.secured else ADMIN

    async def __aenter__(self) -> KafkaProbe:
        from hub_platform.kafka_admin import ensure_topics

        await ensure_topics(self.env.kafka_settings(ADMIN))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self._consumers:
            await c.stop()
        for p in self._producers.values():
            await p.stop()

    async def producer(self, principal: str) -> Any:
        """An idempotent producer (acks=all) connected as `principal`."""
        from aiokafka import AIOKafkaProducer

        if principal not in self._producers:
            producer = AIOKafkaProducer(**self.env.client_options(principal), enable_idempotence=True, acks="all")
            await producer.start()
            self._producers[principal] = producer
        return self._producers[principal]

    async def send_raw(self, logical_topic: str, value: bytes | None, key: str = "k", headers: list[tuple[str, bytes]] | None = None) -> Any:
        from hub_platform.kafka_acls import writer_of

        producer = await self.producer(self._principal(writer_of, logical_topic))
        return await producer.send_and_wait(self.env.topic(logical_topic), value, key=key.encode(), headers=headers or [])

    async def send(self, envelope: Any, logical_topic: str | None = None, headers: list[tuple[str, bytes]] | None = None) -> Any:
        from hub_schema import encode
        from hub_schema.registry import topic_of

        topic = logical_topic or topic_of(envelope.event_type)
        return await self.send_raw(topic, encode(envelope), key=envelope.entity_key, headers=headers)

    async def reader(self, *logical_topics: str) -> Any:
        """A consumer reading the topics from the beginning (every partition, no consumer group)."""
        from aiokafka import AIOKafkaConsumer
        from hub_platform.kafka_acls import reader_of

        by_principal: dict[str, list[str]] = {}
        for t in logical_topics:
            by_principal.setdefault(self._principal(reader_of, t), []).append(self.env.topic(t))
        consumers = []
        for principal, physical in by_principal.items():
            consumer = AIOKafkaConsumer(
                *physical, **self.env.client_options(principal),
                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
            )
            await consumer.start()
            self._consumers.append(consumer)
            consumers.append(consumer)
        return consumers[0] if len(consumers) == 1 else _MergedReader(consumers)

    async def collect(self, consumer: Any, until: Callable[[list[Any]], bool], timeout: float = 30.0, settle: float = 0.0) -> list[Any]:
        """Read records until `until(records)` holds (then `settle` more seconds, to catch extras)."""
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_deadline: float | None = None
        while True:
            now = loop.time()
            if settle_deadline is not None and now >= settle_deadline:
                return records
            if now >= deadline:
                raise AssertionError(f"timed out after {timeout}s with {len(records)} records: {[r.value[:200] for r in records]}")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if settle_deadline is None and until(records):
                if settle <= 0:
                    return records
                settle_deadline = loop.time() + settle


@pytest.fixture
async def kafka_probe(hub_env: HubEnv) -> AsyncIterator[KafkaProbe]:
    async with KafkaProbe(hub_env) as probe:
        yield probe


def envelopes(records: list[Any], event_type: str | None = None) -> list[Any]:
    """Parse records into events, optionally of one type."""
    from hub_schema import parse_event

    out = [parse_event(r.value) for r in records]
    return [e for e in out if event_type is None or e.event_type == event_type]
