"""Producer identity on the broker: each principal may touch exactly what the topic catalog gives it.

The rules are generated from the catalog (`hub_platform.kafka_acls`); the attacks go through a real
secured broker (SASL/SCRAM, StandardAuthorizer, nothing allowed without an ACL) with real clients.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from hub_devstack.pytest_plugin import TestKafka, secure_prefix, unsecure_prefix
from hub_platform.kafka_acls import PRINCIPALS, AclBinding, bindings, reads, unknown_roles, writes
from hub_platform.settings import KafkaSettings
from hub_schema import topics
from hub_schema.topics import CATALOG

# -- the rules ------------------------------------------------------------------------------------


def test_every_producer_and_consumer_in_the_catalog_is_some_principal() -> None:
    assert unknown_roles() == []


def test_the_crm_connector_writes_crm_ingest_and_reads_crm_commands_and_nothing_else() -> None:
    mine = {(b.resource_type, b.resource_name, b.operation) for b in bindings("p.") if b.principal == "User:crm-connector"}
    assert mine == {
        ("TOPIC", "p.crm.ingest", "WRITE"),
        ("TOPIC", "p.crm.commands", "READ"),
        ("GROUP", "p.crm-connector", "READ"),
        ("CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE"),
    }


def test_each_service_writes_what_the_catalog_says_it_produces_and_reads_what_it_consumes() -> None:
    for name in ("identity", "linking", "tasks", "notifications"):
        p = PRINCIPALS[name]
        assert set(writes(p)) == {t.name for t in CATALOG if name in t.producers or "every service" in t.producers}
        assert set(reads(p)) == {t.name for t in CATALOG if name in t.consumers}
        assert AclBinding(f"User:{name}", "GROUP", name, "READ") in bindings()
    # nobody but identity may write identity.events, nobody but linking linking.events (the replay tool aside)
    for topic, owner in ((topics.IDENTITY_EVENTS, "identity"), (topics.LINKING_EVENTS, "linking")):
        writers = {b.principal for b in bindings() if b.resource_name == topic and b.operation == "WRITE"}
        assert writers == {f"User:{owner}", "User:deadletters"}


def test_group_rules_are_the_services_group_ids_under_the_prefix() -> None:
    """A service joins `KafkaSettings.group_id` (its name under the topic prefix); the ACL names exactly that group,
    so a deployment or test run with another prefix neither shares nor may join it."""
    rules = [b for b in bindings("t42.") if b.resource_type == "GROUP"]
    assert KafkaSettings(topic_prefix="t42.").group_id("tasks") == "t42.tasks"
    assert AclBinding("User:tasks", "GROUP", "t42.tasks", "READ") in rules
    assert rules and all(b.pattern_type == "LITERAL" and b.resource_name.startswith("t42.") for b in rules)
    assert KafkaSettings().group_id("tasks") == "tasks"  # no prefix (production): the service's name


def test_topic_rules_are_literal_names_under_the_prefix() -> None:
    rules = [b for b in bindings("t42.") if b.resource_type == "TOPIC"]
    assert rules and all(b.pattern_type == "LITERAL" and b.resource_name.startswith("t42.") for b in rules)
    assert {b.resource_name.removeprefix("t42.") for b in rules} <= {t.name for t in CATALOG}


# -- the broker -----------------------------------------------------------------------------------


@pytest.fixture
async def prefix(secured_kafka: TestKafka) -> AsyncIterator[str]:
    """The catalog's topics and ACLs under a fresh prefix on the secured broker."""
    prefix = f"acl{uuid.uuid4().hex[:8]}."
    await secure_prefix(secured_kafka, prefix)
    yield prefix
    await unsecure_prefix(secured_kafka, prefix)


async def _produce(kafka: TestKafka, principal: str, topic: str, **options: object) -> None:
    producer = AIOKafkaProducer(**{**kafka.client_options(principal), **options}, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k")
    finally:
        await producer.stop()


@pytest.mark.integration
async def test_the_crm_connector_may_write_crm_ingest_and_read_crm_commands(secured_kafka: TestKafka, prefix: str) -> None:
    """The control for the attacks below: the same credentials do work where the catalog allows."""
    await _produce(secured_kafka, "crm-connector", prefix + topics.CRM_INGEST)
    await _produce(secured_kafka, "tasks", prefix + topics.CRM_COMMANDS)
    consumer = AIOKafkaConsumer(prefix + topics.CRM_COMMANDS, **secured_kafka.client_options("crm-connector"),
                                group_id=prefix + "crm-connector", auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=15000)
        while not batch:
            batch = await consumer.getmany(timeout_ms=15000)
        assert [r.value for rs in batch.values() for r in rs] == [b"{}"]
        await consumer.commit()
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.attack("the CRM connector's credentials publish a forged identity.events message",
                    outcome="the broker refuses the write (TopicAuthorizationFailed); nothing reaches the topic")
async def test_the_crm_connector_cannot_write_identity_events(secured_kafka: TestKafka, prefix: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(secured_kafka, "crm-connector", prefix + topics.IDENTITY_EVENTS)
    admin = AIOKafkaConsumer(**secured_kafka.client_options("linking"), group_id=None)
    await admin.start()
    try:
        from aiokafka import TopicPartition

        parts = [TopicPartition(prefix + topics.IDENTITY_EVENTS, p) for p in range(6)]
        assert set((await admin.end_offsets(parts)).values()) == {0}
    finally:
        await admin.stop()


@pytest.mark.integration
@pytest.mark.attack("the CRM connector's credentials join the tasks service's consumer group to read its topics",
                    outcome="the broker refuses the group (GroupAuthorizationFailed) and the topic reads")
async def test_the_crm_connector_cannot_read_the_tasks_group(secured_kafka: TestKafka, prefix: str) -> None:
    consumer = AIOKafkaConsumer(prefix + topics.CRM_COMMANDS, **secured_kafka.client_options("crm-connector"),
                                group_id=prefix + "tasks", auto_offset_reset="earliest", enable_auto_commit=False)
    with pytest.raises(GroupAuthorizationFailedError):
        await consumer.start()
        await consumer.getmany(timeout_ms=10000)
    await consumer.stop()
    admin = AIOKafkaAdminClient(**secured_kafka.client_options("crm-connector"))
    await admin.start()
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await admin.list_consumer_group_offsets(prefix + "tasks")
    finally:
        await admin.close()
    # ... nor the topics the tasks service reads
    reader = AIOKafkaConsumer(prefix + topics.IDENTITY_EVENTS, **secured_kafka.client_options("crm-connector"), group_id=None)
    with pytest.raises(TopicAuthorizationFailedError):
        await reader.start()
        await reader.getmany(timeout_ms=10000)
    await reader.stop()


@pytest.mark.integration
@pytest.mark.attack("a client presents a known principal with a wrong password, or no credentials at all",
                    outcome="the broker refuses the connection; nothing is produced")
async def test_a_wrong_password_or_no_credentials_is_refused(secured_kafka: TestKafka, prefix: str) -> None:
    with pytest.raises(KafkaError):
        await _produce(secured_kafka, "crm-connector", prefix + topics.CRM_INGEST, sasl_plain_password="not-the-password",
                       request_timeout_ms=10000)
    with pytest.raises(KafkaConnectionError):
        await _produce(secured_kafka, "crm-connector", prefix + topics.CRM_INGEST, security_protocol="PLAINTEXT",
                       sasl_mechanism="PLAIN", request_timeout_ms=10000)
