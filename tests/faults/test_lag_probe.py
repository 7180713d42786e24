"""The suites' lag probe reads real lag, on the test broker: every recovery and the final drain of a fault run
stand on it. It once counted over no partitions (a fresh consumer knows no topic) and so always read 0."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faultkit import PREFIX, LagProbe, group_id

from hub_devstack.pytest_plugin import TestKafka

pytestmark = pytest.mark.integration


async def test_lag_is_end_minus_committed_over_every_partition_and_none_for_an_unknown_topic(test_kafka: TestKafka) -> None:
    options = test_kafka.client_options()  # SASL credentials when the session's broker is secured
    bootstrap = options.pop("bootstrap_servers")
    logical, service = f"lagprobe-{uuid.uuid4().hex[:8]}", f"lagprobe-{uuid.uuid4().hex[:8]}"
    topic = PREFIX + logical
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    try:
        for partition, n in ((0, 5), (1, 3), (2, 2)):
            for _ in range(n):
                await producer.send_and_wait(topic, b"x", partition=partition)
    finally:
        await producer.stop()

    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id(service), enable_auto_commit=False,
                                 **options)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await committer.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 3})
    finally:
        await committer.stop()
    probe = LagProbe(bootstrap, **options)
    assert await probe.lag(service, [logical]) == 1 + 0 + 2, probe.last_error
    idle = f"lagprobe-{uuid.uuid4().hex[:8]}"  # a group that never committed (after the first commit: the
    # coordinator of a broker's first group answers "not available" until the offsets topic exists)
    assert await probe.lag(idle, [logical]) == 10, f"nothing committed: every record is lag ({probe.last_error})"

    assert await probe.lag(service, [logical, "no-such-topic-" + uuid.uuid4().hex]) is None, "unknown, never 0"
