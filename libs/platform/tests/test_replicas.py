"""Two replicas of a service share its partitions; one stopped gracefully hands them over; every event's effect
happens once (real broker, real PostgreSQL, the service as two real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from hub_devstack.provision import provision_service, with_database
from hub_devstack.pytest_plugin import HubEnv, KafkaProbe
from hub_platform.groups import describe_group, remove_static_members, topic_partitions, wait_settled
from hub_schema import make_event, topics
from hub_schema.events.diagnostics import DiagPing

pytestmark = pytest.mark.integration


class Replica:
    """One `python -m hub_platform.echo` process of the shared consumer group `echo`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.port = int(env["HUB_HTTP_PORT"])
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "hub_platform.echo"], env={**os.environ, **env},
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"replica exited; log {self.log}:\n{self.log.read_text()[-3000:]}"
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"replica not ready after {timeout}s; log {self.log}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    async def wait_exit(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)


@pytest.fixture
async def echo_replicas(hub_env: HubEnv, tmp_path: Path) -> AsyncIterator[tuple[HubEnv, list[Replica]]]:
    hub_env.dsns["echo"] = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    started: list[Replica] = []
    yield hub_env, started
    # Gracefully, and static members removed, so the run leaves nothing behind in its group (`<prefix>echo`).
    for replica in started:
        replica.signal(signal.SIGTERM)
    for replica in started:
        await replica.wait_exit(30)
    admin = await _admin(hub_env)
    try:
        statics = [r.env["HUB_KAFKA__GROUP_INSTANCE_ID"] for r in started if "HUB_KAFKA__GROUP_INSTANCE_ID" in r.env]
        with contextlib.suppress(Exception):
            await remove_static_members(admin, group(hub_env), statics)
    finally:
        await admin.close()


def group(env: HubEnv) -> str:
    """The echo service's consumer group in this test's slice of the broker."""
    return env.kafka_settings("echo").group_id("echo")


async def _admin(env: HubEnv) -> AIOKafkaAdminClient:
    """An admin client for the `echo` group: its members, their partitions and removing static ones."""
    admin = AIOKafkaAdminClient(**env.client_options("echo"))  # the group's own principal may describe and leave it
    await admin.start()
    return admin


async def _handled(env: HubEnv, count: int, timeout: float = 90) -> list[uuid.UUID]:
    """Wait until `count` pings have their row (or the timeout passes); return the event ids handled."""
    conn = await asyncpg.connect(with_database(env.admin_dsn, env.database))
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM echo.echo_pings") < count and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM echo.echo_pings")]
    finally:
        await conn.close()


async def _lag_partitions(replica: Replica) -> set[str]:
    """Partitions whose lag this replica exports (hub_consumer_lag series)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{replica.port}/metrics")).text
    return set(re.findall(r'^hub_consumer_lag\{[^}]*partition="(\d+)"[^}]*\}', text, re.M))


async def _send_pings(probe: KafkaProbe, seqs: range, sent: list[uuid.UUID]) -> None:
    for i in seqs:
        ping = make_event(DiagPing(seq=i), org_id="org-1", entity_key=f"diag:{i % 24}", producer="test", origin="crm")
        await probe.send(ping, topics.CRM_INGEST)
        sent.append(ping.event_id)


async def test_two_replicas_split_partitions_and_hand_over_on_a_graceful_stop(
    echo_replicas: tuple[HubEnv, list[Replica]], kafka_probe: KafkaProbe, tmp_path: Path,
) -> None:
    env, replicas = echo_replicas
    sent: list[uuid.UUID] = []
    replicas.append(Replica(env.env("echo"), tmp_path / "echo-1.log"))
    await replicas[0].wait_ready()
    await _send_pings(kafka_probe, range(0, 48), sent)  # 24 keys: every partition, all on the first replica
    assert len(await _handled(env, len(sent))) == len(sent)
    alone = await _lag_partitions(replicas[0])

    replicas.append(Replica(env.env("echo"), tmp_path / "echo-2.log"))
    await replicas[1].wait_ready()
    admin = await _admin(env)
    try:
        partitions = await topic_partitions(admin, [env.topic(topics.CRM_INGEST)])
        took, view = await wait_settled(admin, group(env), partitions, members=2)
        print(f"\ntwo replicas own the {len(partitions)} partitions {took:.2f}s after the second was ready")
        assert view.owned_twice() == []
        assert all(m.partitions for m in view.members), view  # split: each owns some
        assert set().union(*(m.partitions for m in view.members)) == set(partitions)

        await _send_pings(kafka_probe, range(48, 348), sent)
        assert len(await _handled(env, len(sent))) == len(sent)
        first, second = await _lag_partitions(replicas[0]), await _lag_partitions(replicas[1])
        assert len(alone) == len(partitions) and first and second  # each reports the partitions it owns...
        assert not first & second  # ...and the first forgot those it gave up in the rebalance

        # more traffic while the second replica is stopped gracefully halfway
        for i in range(348, 648, 50):
            if i == 498:
                replicas[1].signal(signal.SIGTERM)
                handover = asyncio.create_task(wait_settled(admin, group(env), partitions, members=1))
            await _send_pings(kafka_probe, range(i, i + 50), sent)
        assert await replicas[1].wait_exit() == -signal.SIGTERM  # uvicorn re-raises the signal once shut down
        assert "service stopped" in replicas[1].log.read_text()  # graceful: the batch in hand committed
        took, view = await handover
        print(f"graceful stop: the remaining replica owns all {len(partitions)} partitions {took:.2f}s after SIGTERM")
        assert view.owned_twice() == []
    finally:
        await admin.close()

    handled = await _handled(env, len(sent))
    conn = await asyncpg.connect(with_database(env.admin_dsn, env.database))
    try:
        inbox = await conn.fetchval("SELECT count(*) FROM echo.inbox WHERE consumer = 'echo'")
        dead = await conn.fetchval("SELECT count(*) FROM echo.dead_letter_log")
    finally:
        await conn.close()
    assert sorted(handled) == sorted(sent)  # every event's effect, once (event_id is the key)
    assert inbox == len(sent)
    assert dead == 0  # a second run of a handled event would have hit the primary key and been dead-lettered


async def test_a_static_replica_restarted_keeps_its_partitions_and_is_removed_at_once(
    echo_replicas: tuple[HubEnv, list[Replica]], tmp_path: Path,
) -> None:
    """Static membership: a restart within the session timeout moves no partition; scaling down removes the member
    from the group at once instead of leaving its partitions without an owner for the session timeout (30 s)."""
    env, replicas = echo_replicas
    envs = [env.env("echo", HUB_OBS__LOG_LEVEL="warning", HUB_KAFKA__GROUP_INSTANCE_ID=f"echo-{n}",
                    HUB_KAFKA__SESSION_TIMEOUT_MS="30000") for n in (1, 2)]
    replicas.extend(Replica(e, tmp_path / f"echo-{n}.log") for n, e in enumerate(envs, 1))
    await asyncio.gather(*(r.wait_ready() for r in replicas))
    admin = await _admin(env)
    try:
        partitions = await topic_partitions(admin, [env.topic(topics.CRM_INGEST)])
        _, before = await wait_settled(admin, group(env), partitions, members=2)
        owned = {m.instance_id: m.partitions for m in before.members}
        assert set(owned) == {"echo-1", "echo-2"}

        replicas[1].signal(signal.SIGTERM)
        assert await replicas[1].wait_exit() == -signal.SIGTERM
        replicas[1] = Replica(envs[1], tmp_path / "echo-2.log")
        await replicas[1].wait_ready()
        _, after = await wait_settled(admin, group(env), partitions, members=2)
        assert {m.instance_id: m.partitions for m in after.members} == owned

        replicas[1].signal(signal.SIGTERM)
        assert await replicas[1].wait_exit() == -signal.SIGTERM
        t0 = time.monotonic()
        assert await remove_static_members(admin, group(env), ["echo-2"]) == {"echo-2": 0}
        members = (await describe_group(admin, group(env))).members  # every member, in whatever state the group is
        assert "echo-2" not in [m.instance_id for m in members]  # gone at once, not after the session timeout
        took, view = await wait_settled(admin, group(env), partitions, members=1)
        print(f"\nstatic member removed: echo-1 owns all partitions after {time.monotonic() - t0:.2f}s "
              "(session timeout 30 s)")
        assert [m.instance_id for m in view.members] == ["echo-1"]
        assert view.owned_twice() == []
    finally:
        await admin.close()


async def _committed(env: HubEnv) -> int:
    """Records the `echo` group has committed on its ingest topic, over all partitions (fresh topics start at 0)."""
    admin = await _admin(env)
    try:
        offsets = await admin.list_consumer_group_offsets(group(env))
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == env.topic(topics.CRM_INGEST) and meta.offset > 0)


async def test_offsets_commit_in_the_background_and_a_graceful_stop_leaves_nothing_to_replay(
    echo_replicas: tuple[HubEnv, list[Replica]], kafka_probe: KafkaProbe, tmp_path: Path,
) -> None:
    """A batch's offsets are committed while the next batch is handled (KafkaSettings.commit_in_background); the last
    batch's commit still lands with no batch after it, and a SIGTERM in the middle of a stream leaves exactly the
    handled records committed: the next owner replays nothing that was handled, and skips nothing that was not."""
    env, replicas = echo_replicas
    sent: list[uuid.UUID] = []
    replicas.append(Replica(env.env("echo"), tmp_path / "echo-1.log"))
    await replicas[0].wait_ready()
    await _send_pings(kafka_probe, range(0, 48), sent)
    assert len(await _handled(env, len(sent))) == len(sent)
    deadline = time.monotonic() + 30
    while (committed := await _committed(env)) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert committed == len(sent), "the last batch's offsets land without another batch to carry them"

    stream = asyncio.create_task(_send_pings(kafka_probe, range(48, 2048), sent))
    conn = await asyncpg.connect(with_database(env.admin_dsn, env.database))
    try:
        while await conn.fetchval("SELECT count(*) FROM echo.echo_pings") < 300:
            await asyncio.sleep(0.02)
        replicas[0].signal(signal.SIGTERM)  # mid-stream: batches in hand, one commit most likely in flight
        assert await replicas[0].wait_exit() == -signal.SIGTERM
        await stream
        handled = await conn.fetchval("SELECT count(*) FROM echo.echo_pings")
    finally:
        await conn.close()
    assert "service stopped" in replicas[0].log.read_text()
    assert handled < len(sent), "stopped before the end of the stream, or the test shows nothing"
    assert await _committed(env) == handled, "committed offsets = exactly the records handled"
