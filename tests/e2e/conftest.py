"""Every end-to-end scenario doubles as a personal-data check (issue 15, "Personal data").

After each scenario, every line the services logged (their JSON lines on stdout, and stderr) and every header of every dead letter
it produced is searched for each e-mail address the scenario used: the addresses written in the scenario's
source and the recipients of the mails the SMTP sink received. One hit fails the scenario.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import AsyncIterator
from email.utils import getaddresses
from pathlib import Path

import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_schema import topics

ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def addresses_used(scenario: Path, tmp_path: Path) -> set[str]:
    found = {a.lower() for a in ADDRESS.findall(scenario.read_text(encoding="utf-8"))}
    for eml in tmp_path.rglob("*.eml"):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        found |= {addr.lower() for _, addr in getaddresses(msg.get_all("To", []) + msg.get_all("Cc", [])) if addr}
    return found


def is_log_line(line: str) -> bool:
    """A service's structlog JSON line (stdout also carries what a scenario prints for its reader, e.g. the demo)."""
    try:
        return "event" in json.loads(line)
    except (ValueError, TypeError):
        return False


async def dead_letter_headers(env: HubEnv) -> list[str]:
    """Every header of every record on the run's dead-letter topic, read to its end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from hub_platform.kafka_acls import reader_of

    # as the principal the catalog lets read dead letters (the replay tool's), on a secured broker
    consumer = AIOKafkaConsumer(**env.client_options(reader_of(topics.DEAD_LETTERS)), enable_auto_commit=False)
    await consumer.start()
    try:
        topic = env.topic(topics.DEAD_LETTERS)
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        lines: list[str] = []
        while any(await consumer.position(tp) < ends[tp] for tp in partitions):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    lines += [f"{k}: {v.decode('utf-8', 'replace')}" for k, v in r.headers]
        return lines
    finally:
        await consumer.stop()


@pytest.fixture(autouse=True)
async def no_address_in_logs_or_dead_letters(request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str],
                                             hub_env: HubEnv, tmp_path: Path) -> AsyncIterator[None]:
    yield
    out, err = capfd.readouterr()
    print(out, end="")  # still shown with the report of a failing scenario
    addresses = addresses_used(Path(str(request.path)), tmp_path)
    lines = [line for line in out.splitlines() if is_log_line(line)] + err.splitlines() + await dead_letter_headers(hub_env)
    leaks = [(a, line[:300]) for line in lines for a in addresses if a in line.lower()]
    assert not leaks, f"e-mail addresses in logs or dead-letter headers: {leaks[:5]}"
