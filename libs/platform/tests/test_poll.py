"""The consumer's poll: no sleep after an empty poll (hub_platform.service.poll_without_idle_sleep).

FastStream's batch subscriber sleeps `batch_timeout_ms` after a poll that returned nothing, on top of the poll's own
wait; an event arriving during that sleep waited for it (the larger part of a quiet stream's latency). No broker is
needed to show what the subscriber does with what `getmany` returns, so the consumer here is a recording stand-in;
the walking-skeleton tests run the same poll against the real broker.
"""

from __future__ import annotations

from typing import Any

import pytest
from faststream.kafka import KafkaBroker

from hub_platform.service import poll_without_idle_sleep
from hub_platform.settings import KafkaSettings


class RecordingConsumer:
    def __init__(self, answers: list[dict[Any, list[Any]]]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    async def getmany(self, **kwargs: Any) -> dict[Any, list[Any]]:
        self.calls.append(kwargs)
        return self.answers.pop(0)


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
    kafka = KafkaSettings(batch_timeout_ms=123, batch_max_records=7)
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
