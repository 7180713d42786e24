"""`KAFKA_BROKERS=3`: three KRaft nodes from the same jars keep the hub's topics writable and readable
when one node dies (three replicas, min.insync.replicas=2, acks=all, idempotent producers).

A real three-node secured cluster, started here; one node is killed by its pid.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka.admin import AdminClient, ConfigResource

from hub_devstack.kafka import KafkaCluster
from hub_devstack.pytest_plugin import free_port
from hub_devstack.stack import sasl_users
from hub_platform.kafka_admin import confluent_config
from hub_platform.outbox import make_producer
from hub_schema import topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="synchub-test-cluster-"))
    users = sasl_users(workdir, "SASL_PLAINTEXT")
    cluster = KafkaCluster(workdir, [free_port() for _ in range(3)], [free_port() for _ in range(3)], heap="256m", sasl_users=users)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _produce(cluster: KafkaCluster, prefix: str, values: list[bytes]) -> None:
    """As the CRM connector, with the relay's producer settings (idempotent, acks=all)."""
    producer = make_producer(cluster.access().settings("crm-connector", prefix))
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(prefix + topics.CRM_INGEST, v, key=v)
    finally:
        await producer.stop()


async def _consume(cluster: KafkaCluster, prefix: str, count: int) -> list[bytes]:
    """As the identity service in its own group, committing what it read."""
    consumer = AIOKafkaConsumer(prefix + topics.CRM_INGEST, **cluster.access().client_options("identity"),
                                group_id=cluster.access().settings("identity", prefix).group_id("identity"),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[bytes] = []
    try:
        while len(got) < count:
            batch = await consumer.getmany(timeout_ms=1000)
            got += [r.value for rs in batch.values() for r in rs]
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def test_a_three_node_cluster_keeps_working_when_one_node_is_killed(cluster: KafkaCluster) -> None:
    access = cluster.access()
    prefix = f"c{uuid.uuid4().hex[:6]}."
    await access.secure(prefix)  # the catalog's topics (replication factor from the cluster's size) and ACLs

    admin = AIOKafkaAdminClient(**access.client_options())
    await admin.start()
    try:
        described = await admin.describe_topics([prefix + topics.CRM_INGEST, prefix + topics.IDENTITY_EVENTS])
        assert {len(p["replicas"]) for t in described for p in t["partitions"]} == {3}
        resource = ConfigResource("topic", prefix + topics.CRM_INGEST)
        configs_admin = AdminClient(confluent_config(access.settings()))  # aiokafka's admin has no describe_configs here
        found = configs_admin.describe_configs([resource])[resource].result(30)
        entries = {name: entry.value for name, entry in found.items()}
        assert entries["min.insync.replicas"] == "2"
        assert entries["unclean.leader.election.enable"] == "false"
    finally:
        await admin.close()

    # all three up: the group and its offsets topic (three replicas too) exist before a node goes
    await _produce(cluster, prefix, [b"before-0", b"before-1"])
    assert sorted(await _consume(cluster, prefix, 2)) == [b"before-0", b"before-1"]

    victim = cluster.nodes[1]
    victim.kill()
    assert not victim.is_running()

    after = [f"after-{i}".encode() for i in range(12)]  # keys spread over the partitions, some led by the dead node
    await _produce(cluster, prefix, after)
    assert sorted(await _consume(cluster, prefix, len(after))) == sorted(after)
