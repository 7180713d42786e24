"""pytest fixtures: real Kafka and PostgreSQL for integration tests, never a fake.

Where a Docker engine answers, testcontainers starts Kafka (KRaft) and
PostgreSQL; elsewhere the same fixtures start the local servers from
hub_devstack. Servers already running can be reused by setting
HUB_TEST_KAFKA_BOOTSTRAP and HUB_TEST_PG_ADMIN_DSN. A server that cannot be
started fails the run loudly; no test skips for lack of infrastructure.

Isolation: every test that asks for `hub_env` gets its own topic prefix and its
own database, so tests never see each other's messages or rows.
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

from hub_platform.kafka_admin import delete_prefixed_topics

SERVICES = ("identity", "linking", "tasks", "notifications", "sandbox")


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


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("HUB_TEST_KAFKA_BOOTSTRAP"):
        yield os.environ["HUB_TEST_KAFKA_BOOTSTRAP"]
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from hub_devstack.kafka import KafkaServer

    # Every test makes its own prefixed topics (deleted again at its end); a larger heap than
    # `make up`'s keeps a long run's metadata comfortable.
    workdir = _server_dir("kafka")
    server = KafkaServer(workdir, port=free_port(), controller_port=free_port(), heap="768m")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


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

    def topic(self, logical: str) -> str:
        return f"{self.topic_prefix}{logical}"

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """Environment variables a service process (or its settings class) reads."""
        return {
            "HUB_SERVICE_NAME": service,
            "HUB_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
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


@pytest.fixture
async def hub_env(kafka_bootstrap: str, pg_admin_dsn: str) -> AsyncIterator[HubEnv]:
    from hub_devstack.provision import create_database, drop_database, provision_service

    database = f"t_{uuid.uuid4().hex[:10]}"
    await create_database(pg_admin_dsn, database)
    env = HubEnv(kafka_bootstrap, pg_admin_dsn, database, f"t{uuid.uuid4().hex[:8]}.")
    for service in SERVICES:
        env.dsns[service] = await provision_service(pg_admin_dsn, database, service, service)
    yield env
    with contextlib.suppress(Exception):
        await delete_prefixed_topics(kafka_bootstrap, env.topic_prefix)
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


class KafkaProbe:
    """Produces envelopes to and reads messages from the test's topics on the real broker."""

    def __init__(self, env: HubEnv) -> None:
        self.env = env
        self._producer: Any = None
        self._consumers: list[Any] = []

    async def __aenter__(self) -> KafkaProbe:
        from aiokafka import AIOKafkaProducer
        from hub_platform.kafka_admin import ensure_topics
        from hub_platform.settings import KafkaSettings

        await ensure_topics(KafkaSettings(bootstrap_servers=self.env.bootstrap, topic_prefix=self.env.topic_prefix))
        self._producer = AIOKafkaProducer(bootstrap_servers=self.env.bootstrap, enable_idempotence=True, acks="all")
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self._consumers:
            await c.stop()
        await self._producer.stop()

    async def send_raw(self, logical_topic: str, value: bytes | None, key: str = "k", headers: list[tuple[str, bytes]] | None = None) -> Any:
        return await self._producer.send_and_wait(self.env.topic(logical_topic), value, key=key.encode(), headers=headers or [])

    async def send(self, envelope: Any, logical_topic: str | None = None, headers: list[tuple[str, bytes]] | None = None) -> Any:
        from hub_schema import encode
        from hub_schema.registry import topic_of

        topic = logical_topic or topic_of(envelope.event_type)
        return await self.send_raw(topic, encode(envelope), key=envelope.entity_key, headers=headers)

    async def reader(self, *logical_topics: str) -> Any:
        """A consumer reading the topics from the beginning (its own group)."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            *(self.env.topic(t) for t in logical_topics), bootstrap_servers=self.env.bootstrap,
            group_id=f"probe-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

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
