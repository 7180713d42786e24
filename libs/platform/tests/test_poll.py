"""The consumer's poll (hub_platform.service.poll_without_idle_sleep): no sleep after an empty poll, and a batch
topped up with what arrived while the previous one was handled.

FastStream's batch subscriber sleeps `batch_timeout_ms` after a poll that returned nothing, on top of the poll's own
wait; an event arriving during that sleep waited for it (the larger part of a quiet stream's latency). No broker is
needed to show what the subscriber does with what `getmany` returns, so the consumer of those tests is a recording
stand-in. The top-up exists because of how aiokafka fetches, so it is shown on the real broker too.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaBroker

from hub_platform.service import poll_without_idle_sleep
from hub_platform.settings import KafkaSettings


class RecordingConsumer:
    def __init__(self, answers: list[dict[Any, list[Any]]], waits: float = 0.0) -> None:
        self.answers = answers
        self.waits = waits  # > 0: each getmany waits as if for the broker (a poll that found nothing buffered)
        self.calls: list[dict[str, Any]] = []

    async def getmany(self, **kwargs: Any) -> dict[Any, list[Any]]:
        self.calls.append(kwargs)
        if self.waits:
            await asyncio.sleep(self.waits)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    import faststream.kafka.subscriber.usecase as usecase

    calls: list[float] = []

    async def sleep(seconds: float) -> None:
        calls.append(seconds)

    monkeypatch.setattr(usecase.anyio, "sleep", sleep)
    return calls


def subscriber(kafka: KafkaSettings) -> Any:
    return KafkaBroker("127.0.0.1:1").subscriber("t", batch=True, max_records=kafka.batch_max_records,
                                                  batch_timeout_ms=kafka.batch_timeout_ms)


async def test_faststreams_own_poll_sleeps_after_an_empty_poll(slept: list[float]) -> None:
    """Why the replacement exists; should FastStream drop the sleep, this fails and the replacement can go."""
    kafka = KafkaSettings(batch_timeout_ms=123)
    assert await subscriber(kafka).get_msg(RecordingConsumer([{}])) == ()
    assert slept == [0.123]


async def test_the_hub_poll_loops_at_once_and_returns_every_partitions_records(slept: list[float]) -> None:
    kafka = KafkaSettings(batch_timeout_ms=123, batch_max_records=7, batch_topup_ms=0)
    sub = subscriber(kafka)
    poll_without_idle_sleep(sub, kafka)
    consumer = RecordingConsumer([{}, {"p0": ["a", "b"], "p1": ["c"]}])
    assert await sub.get_msg(consumer) == ()
    assert await sub.get_msg(consumer) == ("a", "b", "c")
    assert slept == [], "an empty poll has already waited batch_timeout_ms inside getmany"
    assert consumer.calls == [{"timeout_ms": 123, "max_records": 7}] * 2


def test_a_subscriber_without_get_msg_is_refused_loudly() -> None:
    with pytest.raises(TypeError, match="FastStream changed"):
        poll_without_idle_sleep(object(), KafkaSettings())


async def test_a_poll_that_found_records_buffered_asks_once_more_for_the_room_left() -> None:
    kafka = KafkaSettings(batch_timeout_ms=123, batch_max_records=7, batch_topup_ms=9)
    sub = subscriber(kafka)
    poll_without_idle_sleep(sub, kafka)
    consumer = RecordingConsumer([{"p0": ["a", "b"], "p1": ["c"]}, {"p0": ["d"], "p2": ["e"]}])
    assert await sub.get_msg(consumer) == ("a", "b", "c", "d", "e"), "p0's later offsets come after its first ones"
    assert consumer.calls == [{"timeout_ms": 123, "max_records": 7}, {"timeout_ms": 9, "max_records": 4}]


async def test_a_failed_second_poll_keeps_what_the_first_one_took() -> None:
    """The first poll has moved the consumer's positions past its records: raising would skip them, and the next
    batch's commit would step over them for good."""
    kafka = KafkaSettings(batch_max_records=7, batch_topup_ms=9)
    sub = subscriber(kafka)
    poll_without_idle_sleep(sub, kafka)
    consumer = RecordingConsumer([{"p0": ["a", "b"]}, RuntimeError("topic authorization failed")])  # type: ignore[list-item]
    assert await sub.get_msg(consumer) == ("a", "b")
    assert len(consumer.calls) == 2


@pytest.mark.parametrize(
    ("why", "kafka", "answers", "waits"),
    [
        ("the poll waited for the broker: the consumer was idle, nothing is held back",
         KafkaSettings(batch_max_records=7, batch_topup_ms=9), [{"p0": ["a"]}], 0.02),
        ("the batch is full already", KafkaSettings(batch_max_records=2, batch_topup_ms=9), [{"p0": ["a", "b"]}], 0.0),
        ("the top-up is off", KafkaSettings(batch_max_records=7, batch_topup_ms=0), [{"p0": ["a"]}], 0.0),
        ("nothing came", KafkaSettings(batch_max_records=7, batch_topup_ms=9), [{}], 0.0),
    ],
)
async def test_no_second_poll_when(why: str, kafka: KafkaSettings, answers: list[dict[Any, list[Any]]], waits: float) -> None:
    sub = subscriber(kafka)
    poll_without_idle_sleep(sub, kafka)
    consumer = RecordingConsumer(list(answers), waits)
    await sub.get_msg(consumer)
    assert len(consumer.calls) == 1, why


@pytest.mark.parametrize(("topup_ms", "second_batch"), [(0, [b"a"]), (2000, [b"a", b"b"])])
async def test_on_the_broker_what_arrived_during_a_batch_is_in_the_next_one(
    test_kafka: Any, topup_ms: int, second_batch: list[bytes],
) -> None:
    """Why the top-up exists: while a batch is handled aiokafka fetches a partition's first new record (`a`) and then
    leaves the partition alone until that record is taken, so `b`, produced later in the same batch, is still at the
    broker when the next poll returns `a` at once. With the top-up the next batch holds both; without it (0) `b`
    waits for one batch more."""
    options = test_kafka.client_options()
    topic = f"poll-topup-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = AIOKafkaProducer(**options, acks="all")
    consumer = AIOKafkaConsumer(**options, auto_offset_reset="earliest", fetch_max_wait_ms=50, enable_auto_commit=False)
    try:
        await producer.start()
        await producer.send_and_wait(topic, b"first")
        await consumer.start()
        consumer.assign([TopicPartition(topic, 0)])
        kafka = KafkaSettings(batch_timeout_ms=5000, batch_max_records=500, batch_topup_ms=topup_ms)
        sub = subscriber(kafka)
        poll_without_idle_sleep(sub, kafka)
        assert [r.value for r in await sub.get_msg(consumer)] == [b"first"]
        # "handling" the first batch: a arrives and is fetched, b arrives while a is still buffered
        await producer.send_and_wait(topic, b"a")
        await asyncio.sleep(0.5)
        await producer.send_and_wait(topic, b"b")
        await asyncio.sleep(0.3)
        assert [r.value for r in await sub.get_msg(consumer)] == second_batch
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
