"""Creates the catalog's topics at start-up (the broker's auto-creation stays off); removes a run's prefixed topics;
puts the catalog's ACLs on a secured broker (confluent-kafka: aiokafka's admin client has no ACL calls)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hub_platform.settings import KafkaSettings
from hub_schema.topics import CATALOG, Topic, TopicNames


async def ensure_topics(kafka: KafkaSettings, topics: Iterable[Topic] = CATALOG, replication_factor: int | None = None, timeout: float = 60) -> list[str]:
    """Create missing topics; returns the names created. Safe to run from every replica at once."""
    names = TopicNames(kafka.topic_prefix)
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=15000)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if names(t.name) not in existing]
        if not missing:
            return []
        replication_factor = replication_factor or kafka.replication_factor or await cluster_replication(admin)
        wanted = [NewTopic(names(t.name), t.partitions, replication_factor) for t in missing]
        if not wanted:
            return []
        result = await admin.create_topics(wanted)
        created = []
        for name, code, *_ in getattr(result, "topic_errors", []) or getattr(result, "topic_error_codes", []):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"could not create topic {name}: error code {code}")
        return created
    finally:
        await admin.close()


async def cluster_replication(admin: AIOKafkaAdminClient) -> int:
    """Replicas for a new topic when none is set: one per broker, at most 3 (with min.insync.replicas=2 on
    the broker, a write with acks=all is then on two nodes before it is acknowledged)."""
    cluster = await admin.describe_cluster()
    return max(1, min(3, len(cluster.get("brokers") or [])))


async def delete_prefixed_topics(kafka: KafkaSettings | str, prefix: str) -> list[str]:
    """Remove every topic starting with `prefix` (a test's or a benchmark run's own): left behind, thousands
    of partitions pile up on one broker and its heap fills (measured: full GCs of ~150 ms every 2.5 s).
    `kafka`: the admin's settings (or a PLAINTEXT bootstrap)."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    options = kafka.client_options() if isinstance(kafka, KafkaSettings) else {"bootstrap_servers": kafka}
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=30000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


def confluent_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The same connection for a confluent-kafka (librdkafka) client."""
    conf: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username or ""
        conf["sasl.password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    if kafka.ssl_cafile:
        conf["ssl.ca.location"] = kafka.ssl_cafile
    if kafka.ssl_certfile:
        conf["ssl.certificate.location"] = kafka.ssl_certfile
    if kafka.ssl_keyfile:
        conf["ssl.key.location"] = kafka.ssl_keyfile
    return conf


def _confluent_binding(b: Any, *, as_filter: bool = False) -> Any:
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    cls = AclBindingFilter if as_filter else AclBinding
    # librdkafka names Kafka's CLUSTER resource type (code 4) BROKER
    resource = ResourceType.BROKER if b.resource_type == "CLUSTER" else ResourceType[b.resource_type]
    return cls(resource, b.resource_name, ResourcePatternType[b.pattern_type],
               b.principal, b.host, AclOperation[b.operation], AclPermissionType.ALLOW)


def _wait_all(futures: dict[Any, Any], timeout: float) -> None:
    errors = []
    for key, future in futures.items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # collect them all: one message naming every refused binding
            errors.append(f"{key}: {exc}")
    if errors:
        raise RuntimeError("ACL request failed:\n" + "\n".join(errors))


def apply_acls_sync(admin: KafkaSettings, bindings: Iterable[Any], timeout: float = 30) -> int:
    """Create ALLOW bindings (`hub_platform.kafka_acls.AclBinding`) as the admin; idempotent. Returns how many.

    Returns once the broker answering describes them all: the controller commits ACLs before the
    brokers apply them, and a client connecting in between would be refused."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    wanted = [_confluent_binding(b) for b in bindings]
    if not wanted:
        return 0
    client = AdminClient(confluent_config(admin))
    _wait_all(client.create_acls(wanted, request_timeout=timeout), timeout)
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
    deadline = time.monotonic() + timeout
    while True:
        present = set(client.describe_acls(every, request_timeout=timeout).result(timeout=timeout))
        missing = [b for b in wanted if b not in present]
        if not missing:
            return len(wanted)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} ACLs created but not in force after {timeout}s, e.g. {missing[0]}")
        time.sleep(0.1)


def delete_acls_sync(admin: KafkaSettings, bindings: Iterable[Any], timeout: float = 30) -> None:
    """Remove exactly these bindings (a test's prefixed topic rules, when its topics go)."""
    from confluent_kafka.admin import AdminClient

    filters = [_confluent_binding(b, as_filter=True) for b in bindings]
    if filters:
        client = AdminClient(confluent_config(admin))
        _wait_all(client.delete_acls(filters, request_timeout=timeout), timeout)


async def apply_acls(admin: KafkaSettings, bindings: Iterable[Any], timeout: float = 30) -> int:
    return await asyncio.to_thread(apply_acls_sync, admin, list(bindings), timeout)


async def delete_acls(admin: KafkaSettings, bindings: Iterable[Any], timeout: float = 30) -> None:
    await asyncio.to_thread(delete_acls_sync, admin, list(bindings), timeout)
