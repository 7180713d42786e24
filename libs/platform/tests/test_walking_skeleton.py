"""The walking skeleton, on the real broker and database (issue: shared contract and reliable messaging).

ingest topic -> echo service -> its table + outbox -> relay -> output topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, envelopes, running
from hub_platform import echo
from hub_platform.telemetry import trace_id_of_headers
from hub_schema import make_event, topics
from hub_schema.events.diagnostics import DiagPing

pytestmark = pytest.mark.integration

TRACEPARENT = "00-{}-b7ad6b7169203331-01"


def ping(seq: int, key: str = "diag:1") -> object:
    return make_event(DiagPing(seq=seq), org_id="org-1", entity_key=key, producer="test", origin="crm")


async def count_rows(env: HubEnv, service: str = "echo") -> int:
    conn = await asyncpg.connect(_admin_in(env))
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {service}.echo_pings")
    finally:
        await conn.close()


def _admin_in(env: HubEnv) -> str:
    base, _, _ = env.admin_dsn.rpartition("/")
    return f"{base}/{env.database}"


async def _provision_echo(env: HubEnv) -> None:
    from hub_devstack.provision import provision_service

    env.dsns["echo"] = await provision_service(env.admin_dsn, env.database, "echo", "echo")


async def test_event_flows_through_service_with_same_trace_id(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    await _provision_echo(hub_env)
    trace_id = uuid.uuid4().hex
    async with running(echo.build(hub_env.settings(echo.EchoSettings, "echo"))):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        sent = ping(1)
        await kafka_probe.send(sent, headers=[("traceparent", TRACEPARENT.format(trace_id).encode())])
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
    pong = envelopes(records, "diag.pong")[0]
    assert pong.payload.ping_event_id == str(sent.event_id)
    assert pong.envelope.causation_id == sent.event_id
    assert pong.envelope.correlation_id == sent.correlation_id
    assert trace_id_of_headers(records[0].headers) == trace_id
    assert await count_rows(hub_env) == 1


async def test_same_event_twice_has_one_effect(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    await _provision_echo(hub_env)
    async with running(echo.build(hub_env.settings(echo.EchoSettings, "echo"))):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        sent = ping(1)
        await kafka_probe.send(sent)
        await kafka_probe.send(sent)
        await kafka_probe.send(ping(2))  # a marker after the duplicate, on the same key/partition
        records = await kafka_probe.collect(out, lambda rs: any(e.payload.seq == 2 for e in envelopes(rs)), settle=1.0)
    assert sorted(e.payload.seq for e in envelopes(records)) == [1, 2]
    assert await count_rows(hub_env) == 2


async def test_bad_messages_are_dead_lettered_and_partition_keeps_flowing(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    await _provision_echo(hub_env)
    async with running(echo.build(hub_env.settings(echo.EchoSettings, "echo"))):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        dlq = await kafka_probe.reader(topics.DEAD_LETTERS)
        await kafka_probe.send_raw(topics.CRM_INGEST, b'{"event_id": oops', key="diag:1")
        unknown = ping(5).model_copy(update={"event_type": "diag.unheard_of"})
        await kafka_probe.send(unknown, logical_topic=topics.CRM_INGEST)
        await kafka_probe.send_raw(topics.CRM_INGEST, b"\xff\xfe not utf8", key="diag:1", headers=[("bad", b"\xff")])
        await kafka_probe.send(ping(3))
        good = await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
        dead = await kafka_probe.collect(dlq, lambda rs: len(rs) >= 3)
    assert envelopes(good)[0].payload.seq == 3
    codes = sorted(dict(r.headers)["x-dlq-code"].decode() for r in dead)
    assert codes == ["malformed_json", "malformed_json", "unknown_event_type"]
    reasons = {dict(r.headers)["x-dlq-code"].decode(): dict(r.headers)["x-dlq-reason"].decode() for r in dead}
    assert "diag.unheard_of" in reasons["unknown_event_type"]
    assert all(dict(r.headers)["x-dlq-consumer"] == b"echo" for r in dead)
    assert any(r.value == b'{"event_id": oops' for r in dead), "the original bytes travel with the dead letter"


def _spawn_echo(env: HubEnv, failpoint: str = "") -> subprocess.Popen[bytes]:
    proc_env = {**os.environ, **env.env("echo"), "HUB_FAILPOINT": failpoint}
    return subprocess.Popen([sys.executable, "-m", "hub_platform.echo"], env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _downstream_effects(env: HubEnv, probe: KafkaProbe, records_expected: int) -> tuple[int, int]:
    """Count pongs on the topic and distinct pongs after an inbox (what a downstream consumer would apply)."""
    out = await probe.reader(topics.TASKS_EVENTS)
    records = await probe.collect(out, lambda rs: len(rs) >= records_expected, timeout=90, settle=3.0)
    return len(records), len({e.event_id for e in envelopes(records)})


@pytest.mark.parametrize("failpoint", ["consumer.after_commit", "relay.after_publish"])
async def test_sigkill_between_commit_and_publish_publishes_once(hub_env: HubEnv, kafka_probe: KafkaProbe, failpoint: str) -> None:
    await _provision_echo(hub_env)
    proc = _spawn_echo(hub_env, failpoint)
    await kafka_probe.send(ping(1))
    rc = await asyncio.to_thread(proc.wait, 90)
    assert rc == -signal.SIGKILL, "the failpoint killed the service"
    restarted = _spawn_echo(hub_env)
    try:
        republished = failpoint == "relay.after_publish"
        on_topic, distinct = await _downstream_effects(hub_env, kafka_probe, records_expected=2 if republished else 1)
    finally:
        restarted.terminate()
        await asyncio.to_thread(restarted.wait, 30)
    assert distinct == 1
    assert await count_rows(hub_env) == 1
    if failpoint == "relay.after_publish":
        assert on_topic == 2, "published, killed before marking, published again: the inbox absorbs the copy"
    else:
        assert on_topic == 1


async def test_failing_handlers_are_dead_lettered_and_the_rest_of_the_batch_commits(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """A batch with a rejected and a crashing event: both dead-lettered (the crash after its retries), others applied once."""
    await _provision_echo(hub_env)
    from hub_schema.events.diagnostics import DiagPing as Ping

    def note_ping(seq: int, note: str) -> object:
        return make_event(Ping(seq=seq, note=note), org_id="org-1", entity_key="diag:1", producer="test", origin="crm")

    settings = hub_env.settings(echo.EchoSettings, "echo", HUB_TRANSIENT_RETRY_ATTEMPTS="2")
    # Everything is on the topic before the service starts, so it arrives as one batch.
    for envelope in (ping(1), note_ping(2, "reject"), ping(3), note_ping(4, "crash"), ping(5)):
        await kafka_probe.send(envelope)
    async with running(echo.build(settings)):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        dlq = await kafka_probe.reader(topics.DEAD_LETTERS)
        pongs = await kafka_probe.collect(out, lambda rs: len(rs) >= 3, settle=1.0)
        dead = await kafka_probe.collect(dlq, lambda rs: len(rs) >= 2, settle=1.0)
    assert [e.payload.seq for e in envelopes(pongs)] == [1, 3, 5], "order per key kept, failing events left out"
    by_code = {dict(r.headers)["x-dlq-code"].decode(): dict(r.headers) for r in dead}
    assert set(by_code) == {"rejected_by_request", "handler_error"}
    assert by_code["rejected_by_request"]["x-dlq-attempts"] == b"1"
    assert by_code["handler_error"]["x-dlq-attempts"] == b"2"
    assert b"asked the handler to crash" in by_code["handler_error"]["x-dlq-reason"]
    assert await count_rows(hub_env) == 3


@pytest.mark.attack("a message whose handler runs a statement that never finishes, to stall its partition (its org)",
                    outcome="statement_timeout ends it on each attempt, it is dead-lettered (statement_timeout), "
                            "the next message on the same key is handled")
async def test_statement_that_never_finishes_is_dead_lettered_and_the_partition_flows(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """A handler statement that would run for an hour is cancelled by statement_timeout on every attempt, then
    dead-lettered (statement_timeout); the ping behind it on the same key is handled."""
    await _provision_echo(hub_env)
    settings = hub_env.settings(echo.EchoSettings, "echo", HUB_DB__STATEMENT_TIMEOUT_MS="300",
                                HUB_TRANSIENT_RETRY_ATTEMPTS="2")
    async with running(echo.build(settings)):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        dlq = await kafka_probe.reader(topics.DEAD_LETTERS)
        stalled = make_event(DiagPing(seq=1, note="stall"), org_id="org-1", entity_key="diag:1", producer="test",
                             origin="crm")
        await kafka_probe.send(stalled)
        await kafka_probe.send(ping(2))
        good = await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
        dead = await kafka_probe.collect(dlq, lambda rs: len(rs) >= 1)
    assert [e.payload.seq for e in envelopes(good)] == [2]
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["x-dlq-code"] == "statement_timeout"
    assert headers["x-dlq-attempts"] == "2"
    assert envelopes(dead)[0].event_id == stalled.event_id
    assert await count_rows(hub_env) == 1


@pytest.mark.parametrize("batch_path", ["optimistic", "careful"])
async def test_work_undone_in_a_savepoint_publishes_nothing(hub_env: HubEnv, kafka_probe: KafkaProbe, batch_path: str) -> None:
    """A handler that refuses part-way (`ctx.savepoint()`) leaves neither the row nor the event it had begun.

    On the optimistic path events wait in the batch's outbox list; on the careful path (a crashing ping in the
    batch forces it) they are outbox rows: both must be undone with the savepoint.
    """
    await _provision_echo(hub_env)
    from hub_schema.events.diagnostics import DiagPing as Ping

    def note_ping(seq: int, note: str) -> object:
        return make_event(Ping(seq=seq, note=note), org_id="org-1", entity_key="diag:1", producer="test", origin="crm")

    batch = [ping(1), note_ping(2, "undo"), ping(3)]
    if batch_path == "careful":
        batch.append(note_ping(4, "crash"))
    batch.append(ping(5))
    for envelope in batch:  # on the topic before the service starts: one batch
        await kafka_probe.send(envelope)
    settings = hub_env.settings(echo.EchoSettings, "echo", HUB_TRANSIENT_RETRY_ATTEMPTS="1")
    async with running(echo.build(settings)):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        pongs = await kafka_probe.collect(out, lambda rs: any(e.payload.seq == 5 for e in envelopes(rs)), settle=1.0)
    assert [e.payload.seq for e in envelopes(pongs)] == [1, 3, 5]
    assert await count_rows(hub_env) == 3


async def test_partition_groups_in_concurrent_transactions_keep_one_effect_each_and_per_key_order(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """HUB_KAFKA__BATCH_CONCURRENCY=3: a backlog over many keys (so every partition) is handled in concurrent
    transactions; every ping has one effect, and each key's pongs come out in the order of its pings."""
    await _provision_echo(hub_env)
    keys = [f"diag:{k}" for k in range(12)]
    sent = [ping(seq, keys[seq % len(keys)]) for seq in range(600)]
    for env in sent:  # the backlog is on the broker before the service starts: big, multi-partition batches
        await kafka_probe.send(env)
    settings = hub_env.settings(echo.EchoSettings, "echo", HUB_KAFKA__BATCH_CONCURRENCY="3")
    assert settings.kafka.batch_concurrency == 3
    async with running(echo.build(settings)):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        records = await kafka_probe.collect(out, lambda rs: len(rs) >= len(sent), timeout=60, settle=1.0)
    pongs = envelopes(records, "diag.pong")
    assert sorted(p.payload.seq for p in pongs) == list(range(600))
    for key in keys:
        seqs = [p.payload.seq for p in pongs if p.envelope.entity_key == key]
        assert seqs == sorted(seqs), f"{key} out of order"
    assert await count_rows(hub_env) == 600


async def test_a_wedged_offset_commit_makes_the_process_exit_for_a_restart_and_nothing_is_lost(
        hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """Issue 17: once in the long fault run a replica's group client stopped answering after a broker kill (no
    commit, no heartbeat, no rebalance for 12 minutes) while /readyz said ready. An offset commit that does not
    return within HUB_KAFKA__COMMIT_TIMEOUT_SECONDS now ends the process with code 75 and a `consumer wedged`
    line; the restarted process replays the batch and the inbox absorbs it."""
    await _provision_echo(hub_env)
    proc_env = {**os.environ, **hub_env.env("echo"), "HUB_FAILPOINT": "consumer.commit_stall",
                "HUB_KAFKA__COMMIT_TIMEOUT_SECONDS": "2", "HUB_OBS__LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "hub_platform.echo"], env=proc_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    await kafka_probe.send(ping(1))
    rc = await asyncio.to_thread(proc.wait, 90)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert rc == 75, output[-2000:]
    wedged = [json.loads(line) for line in output.splitlines() if "consumer wedged" in line and line.startswith("{")]
    assert len(wedged) == 1 and wedged[0]["alert"] == "consumer_wedged" and wedged[0]["since"], output[-2000:]
    restarted = _spawn_echo(hub_env)
    try:
        _, distinct = await _downstream_effects(hub_env, kafka_probe, records_expected=1)
    finally:
        restarted.terminate()
        await asyncio.to_thread(restarted.wait, 30)
    assert distinct == 1
    assert await count_rows(hub_env) == 1, "the replayed batch was absorbed by the inbox"
