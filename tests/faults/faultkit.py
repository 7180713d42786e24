"""The fault harness: its own Kafka, PostgreSQL and SMTP sink, services as real processes, faults, checks.

Why it is shaped like this:
- the servers are our own (never the shared dev servers): the suite SIGKILLs and restarts them;
- services run as subprocesses started from their console scripts / `python -m`, exactly as
  deployed, so SIGKILL is a real crash (no graceful shutdown, no `finally` runs);
- every figure is measured from the outside: rows read with the admin role, events read back
  from the broker, lag from the consumer group's committed offsets;
- traffic is a steady stream from one sender per run, each message sent and acknowledged before
  the next, so the order of a key's messages on its partition is the order they were generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hub_devstack._proc import free_port
from hub_devstack.kafka import KafkaCluster, KafkaServer
from hub_devstack.postgres import PostgresServer
from hub_devstack.provision import create_database, provision_service, with_database
from hub_devstack.smtp_sink import SmtpSink
from hub_platform.kafka_admin import ensure_topics
from hub_platform.service import WEDGED_EXIT_CODE
from hub_platform.settings import KafkaSettings
from hub_schema import encode, make_event, parse_event, topics
from hub_schema.envelope import MAX_MESSAGE_BYTES
from hub_schema.events.diagnostics import DiagPing

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the outages we cause are expected; figures tell the story

ROLES = ("identity", "linking", "tasks", "notifications", "sandbox", "echo")
PREFIX = "f."
DATABASE = "faults"


def group_id(service: str) -> str:
    """The consumer group of a service the suite runs (its name under the suite's topic prefix)."""
    return KafkaSettings(topic_prefix=PREFIX).group_id(service)


def now() -> float:
    return time.monotonic()


# --- the servers -----------------------------------------------------------------------------


class Infra:
    """Kafka + PostgreSQL + SMTP sink in `root`, on free ports; killable and restartable in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kafka = KafkaServer(root / "kafka", port=free_port(), controller_port=free_port())
        self.pg = PostgresServer(root / "pg" / "data", port=free_port(), fsync=False)
        self.smtp = SmtpSink(root / "mail", port=free_port())
        self.dsns: dict[str, str] = {}

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def admin_dsn(self) -> str:
        return with_database(self.pg.admin_dsn, DATABASE)

    async def start(self) -> None:
        await asyncio.gather(asyncio.to_thread(self.kafka.start), asyncio.to_thread(self.pg.start))
        self.smtp.start()
        await create_database(self.pg.admin_dsn, DATABASE)
        for role in ROLES:
            self.dsns[role] = await provision_service(self.pg.admin_dsn, DATABASE, role, role)
        await ensure_topics(KafkaSettings(bootstrap_servers=self.bootstrap, topic_prefix=PREFIX))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.smtp.stop()
        for server in (self.kafka, self.pg):
            with contextlib.suppress(Exception):
                server.stop(timeout=20)

    async def restart_kafka(self, down: float) -> None:
        self.kafka.kill()
        await asyncio.sleep(down)
        await asyncio.to_thread(self.kafka.start)

    async def restart_pg(self, down: float) -> None:
        self.pg.kill()
        await asyncio.sleep(down)
        await asyncio.to_thread(self.pg.start)


CONTROLLER_LINE = re.compile(r"\[QuorumController id=(\d+)\] Becoming the active controller at epoch (\d+)")


class ClusterInfra(Infra):
    """Like `Infra`, with a three-node Kafka cluster (`KafkaCluster`, replication 3, min.insync.replicas 2) whose
    nodes are killed one at a time: the one leading the busiest partitions, or the active controller."""

    def __init__(self, root: Path, brokers: int = 3) -> None:
        self.root = root
        ports = [free_port() for _ in range(brokers)]
        self.kafka = KafkaCluster(root / "kafka", ports, [free_port() for _ in ports])  # type: ignore[assignment]
        self.pg = PostgresServer(root / "pg" / "data", port=free_port(), fsync=False)
        self.smtp = SmtpSink(root / "mail", port=free_port())
        self.dsns = {}

    @property
    def cluster(self) -> KafkaCluster:
        assert isinstance(self.kafka, KafkaCluster)
        return self.kafka

    async def restart_node(self, node_id: int, down: float) -> None:
        node = self.cluster.nodes[node_id - 1]
        node.kill()
        await asyncio.sleep(down)
        await asyncio.to_thread(node.start)

    async def restart_kafka(self, down: float) -> None:
        await self.restart_node(await self.busiest_leader(), down)

    async def busiest_leader(self) -> int:
        """The node leading the partitions that hold the most records of the topics the stream writes."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, request_timeout_ms=5000)
        await admin.start()
        await consumer.start()
        try:
            names = [PREFIX + t for t in (topics.CRM_INGEST, topics.PM_INGEST, topics.HUB_REQUESTS, topics.NOTIFICATION_REQUESTS)]
            leaders = {TopicPartition(t["topic"], p["partition"]): p["leader"]
                       for t in await admin.describe_topics(names) for p in t["partitions"]}
            ends = await consumer.end_offsets(list(leaders))
            load: Counter[int] = Counter()
            for tp, leader in leaders.items():
                load[leader] += ends[tp]
            return load.most_common(1)[0][0]
        finally:
            await consumer.stop()
            await admin.close()

    def active_controller(self) -> tuple[int, int]:
        """(node id, epoch) of the latest "Becoming the active controller" in the nodes' logs (KRaft: the quorum
        leader; aiokafka has no DescribeQuorum, and a broker's metadata names a random broker as controller)."""
        best = (0, -1)
        for node in self.cluster.nodes:
            for path in (node.workdir / "logs").glob("*.log*"):
                for m in CONTROLLER_LINE.finditer(path.read_text(errors="replace")):
                    if int(m.group(2)) > best[1]:
                        best = (int(m.group(1)), int(m.group(2)))
        return best

    def shape(self) -> str:
        return f"{len(self.cluster.nodes)} Kafka brokers (KRaft, each broker+controller), replication {self.cluster.replication}"


# --- the services ----------------------------------------------------------------------------


class ServiceProc:
    """One service as a subprocess; SIGKILL and restart it on the same port and environment."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = int(env["HUB_HTTP_PORT"])
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.lives: list[list[float | None]] = []  # [start, end] wall-clock times of each process (ownership log)

    def start(self, **extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "HUB_FAILPOINT"}
        env.update(self.env)
        env.update(extra)
        with self.log.open("ab") as out:
            out.write(f"\n=== start #{self.starts + 1} {extra or ''} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        self.lives.append([time.time(), None])

    def _ended(self, at: float | None = None) -> None:
        """The current process is gone (killed, stopped or exited on its own): close its life."""
        if self.lives and self.lives[-1][1] is None:
            self.lives[-1][1] = at or time.time()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def replica(self, index: int) -> ServiceProc:
        """Another process of the same service (same consumer group and database), on its own HTTP port."""
        return ServiceProc(f"{self.name}-{index}", self.argv, {**self.env, "HUB_HTTP_PORT": str(free_port())}, self.log.parent)

    def kill(self) -> None:
        """SIGKILL, by pid (our own child)."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.kills += 1
        if self.proc is not None:
            self.proc.wait(10)
        self._ended()

    def stop(self) -> None:
        """SIGTERM: the batch in hand commits, then the consumer leaves its group (no revoke callback runs then), so
        for the ownership check its partitions are given up when it is asked to stop."""
        asked = time.time()
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._ended(asked)

    async def wait_exit(self, timeout: float) -> bool:
        deadline = now() + timeout
        while now() < deadline:
            if not self.alive():
                self._ended()
                return True
            await asyncio.sleep(0.05)
        return False

    async def ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                r = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                return r.status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, timeout: float = 60) -> float:
        started = now()
        while now() - started < timeout:
            if not self.alive():
                raise AssertionError(f"{self.name} exited (code {self.proc and self.proc.returncode}); log: {self.log}")
            if await self.ready():
                return now() - started
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout}s; log: {self.log}")


def service_env(infra: Infra, service: str, schema_role: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "HUB_SERVICE_NAME": service,
        "HUB_KAFKA__BOOTSTRAP_SERVERS": infra.bootstrap,
        "HUB_KAFKA__TOPIC_PREFIX": PREFIX,
        "HUB_DB__URL": infra.dsns[schema_role or service],
        "HUB_HTTP_PORT": str(free_port()),
        "HUB_OBS__LOG_LEVEL": "warning",
        "HUB_RELAY_POLL_SECONDS": "0.2",
        "HUB_SMTP__HOST": infra.smtp.host,
        "HUB_SMTP__PORT": str(infra.smtp.port),
        **extra,
    }


def echo_service(infra: Infra, logdir: Path) -> ServiceProc:
    return ServiceProc("echo", [sys.executable, "-m", "hub_platform.echo"], service_env(infra, "echo"), logdir)


def tasks_service(infra: Infra, logdir: Path) -> ServiceProc:
    return ServiceProc("tasks", [str(Path(sys.executable).parent / "hub-tasks")], service_env(infra, "tasks"), logdir)


def notifications_service(infra: Infra, logdir: Path) -> ServiceProc:
    """The real notification service, with delivery timings shortened so a run sees crashed sends re-claimed."""
    env = service_env(
        infra, "notifications",
        HUB_DELIVERY__LEASE_SECONDS="4", HUB_DELIVERY__OUTAGE_BASE_SECONDS="0.5", HUB_DELIVERY__OUTAGE_MAX_SECONDS="2",
        HUB_DELIVERY__POLL_SECONDS="0.5", HUB_DELIVERY__RETRY_BASE_SECONDS="1", HUB_DELIVERY__RETRY_MAX_SECONDS="4",
        HUB_DELIVERY__QUICK_RETRY_INITIAL="0.05", HUB_DELIVERY__QUICK_RETRY_MAX="0.2", HUB_SMTP__TIMEOUT="5",
        HUB_DELIVERY__MAX_ATTEMPTS="50",
    )
    return ServiceProc("notifications", [str(Path(sys.executable).parent / "hub-notifications")], env, logdir)


# --- the broker, from the outside ------------------------------------------------------------


class Producer:
    """Sends and waits for the ack; on a broker outage it keeps trying (a connector would too)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._p: AIOKafkaProducer | None = None
        self.retries = 0

    async def _producer(self) -> AIOKafkaProducer:
        if self._p is None:
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all",
                                 request_timeout_ms=10000, max_request_size=2 * 1024 * 1024)
            await p.start()
            self._p = p
        return self._p

    async def send(self, topic: str, value: bytes, key: str) -> tuple[int, int]:
        while True:
            try:
                p = await self._producer()
                md = await asyncio.wait_for(p.send_and_wait(PREFIX + topic, value, key=key.encode()), 20)
                return md.partition, md.offset
            except Exception:
                self.retries += 1
                await self.close()
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._p is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._p.stop(), 10)
            self._p = None


async def read_all(bootstrap: str, logical: str, timeout: float = 60) -> list[Any]:
    """Every record of a topic, from the beginning to the end offsets as of now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                fetch_max_bytes=8 * 1024 * 1024, max_partition_fetch_bytes=2 * 1024 * 1024)
    await consumer.start()
    try:
        name = PREFIX + logical
        parts = [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or set())]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or set())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = now() + timeout
        while True:
            positions = [await consumer.position(tp) for tp in parts]
            if all(pos >= ends[tp] for pos, tp in zip(positions, parts)):
                break
            if now() > deadline:
                raise AssertionError(f"could not read {name} to its end within {timeout}s")
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                out.extend(recs)
        return out
    finally:
        await consumer.stop()


class LagProbe:
    """Consumer lag of a service's group on its input topics = end offsets - committed offsets.

    None when it cannot tell, never 0: a consumer fresh from `start()` knows no topic yet (`partitions_for_topic`
    is None until a metadata update), and counting over no partitions read as "lag 0" — every recovery and the
    final drain of a run then passed while a wedged service had thousands of records unread (CI, 2026-12-01)."""

    def __init__(self, bootstrap: str, **client_options: Any) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options  # e.g. SASL credentials (the suites' brokers are plaintext)
        self.last_error = ""  # why the last call answered None

    async def lag(self, group: str, logical_topics: list[str]) -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000, **self.client_options)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, request_timeout_ms=5000,
                                    **self.client_options)
        try:
            await asyncio.wait_for(admin.start(), 5)
            await asyncio.wait_for(consumer.start(), 5)
            names = [PREFIX + t for t in logical_topics]
            if not all(consumer.partitions_for_topic(n) for n in names):
                await asyncio.wait_for(consumer._client.force_metadata_update(), 5)  # noqa: SLF001
            known = {n: consumer.partitions_for_topic(n) for n in names}
            if not all(known.values()):
                self.last_error = f"no partitions known for {sorted(n for n, ps in known.items() if not ps)}"
                return None
            parts = [TopicPartition(n, p) for n, ps in known.items() for p in sorted(ps)]
            ends = await asyncio.wait_for(consumer.end_offsets(parts), 5)
            committed = await asyncio.wait_for(admin.list_consumer_group_offsets(group_id(group)), 5)
            total = 0
            for tp in parts:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += max(0, ends[tp] - done)
            return total
        except Exception as exc:  # a broker restart is part of the run: unknown this time
            self.last_error = repr(exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()


class Watcher:
    """Follows output topics in the background; remembers when each record was seen (for recovery times)."""

    def __init__(self, bootstrap: str, logical_topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = [PREFIX + t for t in logical_topics]
        self.seen: list[tuple[float, str]] = []  # (monotonic time, topic)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap, group_id=f"watch-{uuid.uuid4().hex[:6]}",
                                        auto_offset_reset="latest", enable_auto_commit=True)
            try:
                await consumer.start()
                while True:
                    batch = await consumer.getmany(timeout_ms=200)
                    t = now()
                    for tp, recs in batch.items():
                        self.seen.extend((t, tp.topic) for _ in recs)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def first_after(self, t0: float, topic: str) -> float | None:
        for t, name in self.seen:
            if t >= t0 and name == PREFIX + topic:
                return t
        return None

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class OwnershipWatch:
    """Asks the group coordinator every 0.2 s who owns which partition, for every group, through the whole run:
    a partition owned by two members of a Stable group would let two replicas work on one key at once."""

    def __init__(self, bootstrap: str, groups: dict[str, list[str]]) -> None:
        self.bootstrap = bootstrap
        self.groups = groups
        self.samples = 0
        self.owned_twice: list[str] = []
        self.most_members: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from hub_platform.groups import describe_group

        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                while True:
                    for group, logical in self.groups.items():
                        view = (await describe_group(admin, group_id(group))).reading({PREFIX + t for t in logical})
                        self.samples += 1
                        self.most_members[group] = max(self.most_members.get(group, 0), len(view.members))
                        if view.state == "Stable" and view.owned_twice():
                            self.owned_twice.append(f"{group}: {view.owned_twice()}")
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                raise
            except Exception:  # broker restarts are part of the run
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


# --- traffic -----------------------------------------------------------------------------------

BAD_KINDS = {
    "malformed_json": "malformed_json",
    "wrong_version": "unsupported_version",
    "oversized": "oversized",
    "unknown_type": "unknown_event_type",
    "invalid_payload": "invalid_payload",
}
MARKER = re.compile(rb"bad-[a-z_]+-[0-9a-f]{32}")  # every bad input carries one (first occurrence = its id)
SPECIAL_KINDS = ("duplicate", "out_of_order", "unknown_org", *BAD_KINDS)


@dataclass
class PingTraffic:
    """A steady stream of diag.ping over `keys` entity keys, salted with duplicates and bad inputs."""

    producer: Producer
    total: int
    rate: float
    keys: int = 12
    special_every: int = 9
    seed: int = 7
    sent_valid: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (event_id, key) per send
    accepted: dict[uuid.UUID, str] = field(default_factory=dict)
    bad: list[tuple[str, str, str, str]] = field(default_factory=list)  # (kind, expected code, marker, topic)
    injected: Counter[str] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # ask to stop between two messages (never cancel:
    messages: int = 0                                               # a message would be sent but not recorded)
    notify_every: int = 0  # 0: pings only; n: every n-th message is a notification.requested
    notify_accepted: set[uuid.UUID] = field(default_factory=set)  # request ids that must yield one e-mail
    notify_sent: int = 0
    notify_rerequested: int = 0
    tasks_every: int = 0  # 0: no PM tasks; n: every n-th message is a pm.task.upserted
    pm_tasks: set[str] = field(default_factory=set)  # flagged PM tasks of the enabled org: one crm.task.create each
    pm_tasks_unknown_org: set[str] = field(default_factory=set)  # must yield no command
    consumers: dict[str, set[str]] = field(default_factory=dict)  # logical topic -> consumer groups reading it

    def _pm_task(self, task_id: str, version: int, org: str = "org-1") -> tuple[bytes, str]:
        from datetime import datetime, timedelta, timezone

        from hub_schema.events.pm import PmTaskUpserted

        payload = PmTaskUpserted(portal_id="portal-1", project_id="proj-1", id=task_id, title=f"Task {task_id} v{version}",
                                 priority="medium", status="open", owner_id="pu-1", recurring=False, add_to_crm=True,
                                 version=version, acting_user_id="pu-1",
                                 modified_at=datetime(2024, 4, 1, tzinfo=timezone.utc) + timedelta(minutes=version))
        key = f"task:{task_id}"
        return encode(make_event(payload, org_id=org, entity_key=key, producer="faults", origin="pm")), key

    async def _send_pm_tasks(self, i: int) -> None:
        """A new flagged PM task; some arrive twice, some newest-first (v3 then v2), some for an unknown org."""
        roll = i // self.tasks_every % 6
        task_id = f"pt-{i}"
        if roll == 4:
            self.injected["task_unknown_org"] += 1
            self.pm_tasks_unknown_org.add(task_id)
            sends = [self._pm_task(task_id, 1, org=f"org-unknown-{i}")]
        else:
            self.pm_tasks.add(task_id)
            if roll == 1:
                self.injected["task_duplicate_event"] += 1
                raw, key = self._pm_task(task_id, 1)
                sends = [(raw, key), (raw, key)]
            elif roll == 3:
                self.injected["task_out_of_order"] += 1
                sends = [self._pm_task(task_id, 3), self._pm_task(task_id, 2)]
            else:
                sends = [self._pm_task(task_id, 1)]
        for raw, key in sends:
            await self.producer.send(topics.PM_INGEST, raw, key)
            self.messages += 1

    def _notification(self, request_id: uuid.UUID, *, org: str = "org-1", data: dict[str, Any] | None = None) -> tuple[bytes, str]:
        from hub_schema.events.notifications import NotificationRequested, Recipient

        payload = NotificationRequested(
            request_id=request_id, kind="task_create_refused", optional=False,
            recipient=Recipient(email=f"user{request_id.hex[:8]}@example.com", name="Fault Test", locale="en"),
            data={"task_name": f"task {request_id.hex[:6]}", "project_name": "Faults"} if data is None else data,
        )
        key = f"{org}:{request_id}"
        return encode(make_event(payload, org_id=org, entity_key=key, producer="faults", origin="hub")), key

    async def _send_notification(self, i: int, rnd: random.Random, last: list[bytes]) -> None:
        roll = i // self.notify_every % 10
        if roll == 3 and last:  # the same event again (a redelivery): the inbox absorbs it
            raw, key = last[-1], parse_event(last[-1]).envelope.entity_key
            self.injected["notify_duplicate_event"] += 1
        elif roll == 6 and last:  # the same request announced again under a new event id: no second e-mail
            again = parse_event(last[-1])
            raw, key = self._notification(again.payload.request_id, org=again.org_id)
            self.injected["notify_duplicate_request"] += 1
            self.notify_rerequested += 1
        elif roll == 8:  # a request its template cannot render: dead-lettered by the handler
            marker = f"bad-template-{uuid.uuid4().hex}"
            raw, key = self._notification(uuid.uuid4(), data={"marker": marker})
            await self.producer.send(topics.NOTIFICATION_REQUESTS, raw, key)
            self.bad.append(("notify_template_data", "invalid_template_data", marker, topics.NOTIFICATION_REQUESTS))
            self.injected["notify_template_data"] += 1
            self.messages += 1
            return
        else:
            org = f"org-unknown-{i}" if roll == 1 else "org-1"
            if roll == 1:
                self.injected["notify_unknown_org"] += 1
            request_id = uuid.uuid4()
            raw, key = self._notification(request_id, org=org)
            self.notify_accepted.add(request_id)
            last.append(raw)
        await self.producer.send(topics.NOTIFICATION_REQUESTS, raw, key)
        self.notify_sent += 1
        self.messages += 1

    def _ping(self, key: str, seq: int, org: str = "org-1") -> bytes:
        env = make_event(DiagPing(seq=seq), org_id=org, entity_key=key, producer="faults", origin="crm")
        self.accepted[env.event_id] = key
        return encode(env)

    async def _send_valid(self, raw: bytes, key: str) -> None:
        await self.producer.send(topics.CRM_INGEST, raw, key)
        self.sent_valid.append((parse_event(raw).event_id, key))
        self.messages += 1

    async def _send_bad(self, kind: str, key: str) -> None:
        marker = f"bad-{kind}-{uuid.uuid4().hex}"
        good = json.loads(encode(make_event(DiagPing(seq=1, note=marker), org_id="org-1", entity_key=key,
                                            producer="faults", origin="crm")))
        if kind == "malformed_json":
            raw = ('{"event_id": "' + marker + '", "payload": {"seq": 1').encode()
        elif kind == "wrong_version":
            raw = json.dumps({**good, "version": 99}).encode()
        elif kind == "oversized":
            raw = json.dumps({**good, "padding": marker + "x" * (MAX_MESSAGE_BYTES + 1024)}).encode()
        elif kind == "unknown_type":
            raw = json.dumps({**good, "event_type": "diag.unheard_of"}).encode()
        else:  # invalid_payload
            raw = json.dumps({**good, "payload": {"seq": -1, "note": marker}}).encode()
        await self.producer.send(topics.CRM_INGEST, raw, key)
        self.bad.append((kind, BAD_KINDS[kind], marker, topics.CRM_INGEST))
        self.messages += 1

    async def run(self) -> None:
        rnd = random.Random(self.seed)
        seqs: dict[str, int] = defaultdict(int)
        last_raw: dict[str, bytes] = {}
        started = now()
        specials = 0
        last_notifications: list[bytes] = []
        try:
            for i in range(self.total):
                if self.stopping.is_set():
                    break
                key = f"ping:{rnd.randrange(self.keys)}"
                if self.notify_every and i % self.notify_every == 0:
                    await self._send_notification(i, rnd, last_notifications)
                elif self.tasks_every and i % self.tasks_every == 1:
                    await self._send_pm_tasks(i)
                elif i % self.special_every == self.special_every - 1:
                    kind = SPECIAL_KINDS[specials % len(SPECIAL_KINDS)]
                    specials += 1
                    self.injected[kind] += 1
                    if kind == "duplicate" and key in last_raw:
                        await self._send_valid(last_raw[key], key)  # same bytes, same event_id
                    elif kind == "out_of_order":
                        await self._send_valid(self._ping(key, max(0, seqs[key] - 5)), key)  # a late, older one
                    elif kind == "unknown_org":
                        await self._send_valid(self._ping(key, seqs[key], org=f"org-unknown-{i}"), key)
                    elif kind in BAD_KINDS:
                        await self._send_bad(kind, key)
                else:
                    seqs[key] += 1
                    raw = self._ping(key, seqs[key])
                    last_raw[key] = raw
                    await self._send_valid(raw, key)
                delay = started + (i + 1) / self.rate - now()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            self.done.set()


# --- faults and recovery -------------------------------------------------------------------------


@dataclass
class FaultRecord:
    kind: str
    target: str
    injected_at: float
    down_s: float = 0.0
    first_output_s: float | None = None
    recovered_s: float | None = None
    note: str = ""


@dataclass
class Figures:
    mode: str
    events_sent: int = 0
    accepted: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    faults: list[FaultRecord] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    inflight_duplicates: int = 0
    dlq_expected: int = 0
    dlq_found: int = 0
    dlq_redelivered: int = 0
    dlq_unexpected: int = 0
    order_violations: int = 0
    producer_retries: int = 0
    tasks_expected: int = 0
    tasks_created: int = 0
    emails_expected: int = 0
    emails_received: int = 0
    emails_duplicated: int = 0
    duration_s: float = 0.0
    final_lag: int | None = None
    services_ready: dict[str, bool] = field(default_factory=dict)
    services_restarts: dict[str, int] = field(default_factory=dict)
    wedged_restarts: dict[str, int] = field(default_factory=dict)  # exited wedged, restarted by the Supervisor
    ownership_samples: int = 0
    most_members: dict[str, int] = field(default_factory=dict)
    owned_twice: list[str] = field(default_factory=list)
    cluster: str = ""  # the shape of the run (brokers, replicas per service), for the report's header
    effects: dict[str, list[int]] = field(default_factory=dict)  # effect -> [inputs with exactly one, inputs expected]
    ownership_intervals: int = 0  # (replica, partition, from, to) intervals read from the replicas' own logs
    ownership_overlaps: list[str] = field(default_factory=list)  # partitions two live replicas believed they owned
    problems: list[str] = field(default_factory=list)

    def fault_counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)

    def text(self) -> str:
        lines = [
            f"fault suite ({self.mode}): {self.duration_s:.0f}s" + (f" — {self.cluster}" if self.cluster else ""),
            f"  events sent            {self.events_sent} ({self.accepted} distinct accepted)",
            "  inputs injected        " + ", ".join(f"{k}={v}" for k, v in sorted(self.injected.items())),
            f"  faults injected        {len(self.faults)}: " + ", ".join(f"{k}={v}" for k, v in sorted(self.fault_counts().items())),
            f"  lost                   {self.lost}",
            f"  duplicated effects     {self.duplicated}",
            f"  in-flight duplicates   {self.inflight_duplicates} (same event id re-published after a kill; absorbed by inboxes)",
            f"  dead letters           {self.dlq_found}/{self.dlq_expected} bad inputs found with code+reason; "
            f"{self.dlq_redelivered} re-delivered copies; {self.dlq_unexpected} unexpected",
            f"  per-key order          {self.order_violations} violations",
            f"  e-mails                {self.emails_received}/{self.emails_expected} ({self.emails_duplicated} counted in-flight duplicates)"
            if self.emails_expected else "  e-mails                (not exercised)",
            f"  PM tasks -> CRM        {self.tasks_created}/{self.tasks_expected} created once each"
            if self.tasks_expected else "  PM tasks -> CRM        (not exercised)",
            f"  final consumer lag     {self.final_lag}",
            "  services ready at end  " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in self.services_ready.items()),
            "  service restarts       " + ", ".join(f"{k}={v}" for k, v in self.services_restarts.items()),
            "  exited wedged          " + (", ".join(f"{k}={v}" for k, v in sorted(self.wedged_restarts.items()))
                                           + " (offset commit never returned; restarted as restartPolicy: Always would)"
                                           if self.wedged_restarts else "none"),
            f"  producer re-sends      {self.producer_retries} (broker outages)",
            f"  partition ownership    {len(self.owned_twice)} partitions owned twice in {self.ownership_samples} samples "
            f"of the groups; most members: " + ", ".join(f"{k}={v}" for k, v in sorted(self.most_members.items())),
            *([f"  replicas' own view     {len(self.ownership_overlaps)} overlaps in {self.ownership_intervals} ownership "
               "intervals (assigned -> revoked / process gone)"] if self.ownership_intervals else []),
            *[f"  effect                 {k}: {v[0]}/{v[1]} exactly once" for k, v in self.effects.items()],
            "  recovery per fault (s from injection):   kind / target / down / first output / lag normal + ready",
        ]
        for f in self.faults:
            fo = "-" if f.first_output_s is None else f"{f.first_output_s:.1f}"
            rec = "NOT RECOVERED" if f.recovered_s is None else f"{f.recovered_s:.1f}"
            lines.append(f"    {f.kind:<24} {f.target:<14} {f.down_s:>5.1f} {fo:>7} {rec:>7} {f.note}")
        if self.problems:
            lines.append("  PROBLEMS:")
            lines.extend(f"    - {p}" for p in self.problems)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "faults"}
        d["faults"] = [{k: v for k, v in f.__dict__.items() if k != "injected_at"} for f in self.faults]
        d["fault_counts"] = dict(self.fault_counts())
        d["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return d


def replicas_of(services: dict[str, ServiceProc], target: str) -> list[str]:
    """Names of the running processes of a service: `<svc>` (the first) and `<svc>-<n>`, in index order."""
    names = [n for n in services if n == target or (n.startswith(target + "-") and n[len(target) + 1:].isdigit())]
    return sorted(names, key=lambda n: 1 if n == target else int(n.rsplit("-", 1)[1]))


async def inject(fault: str, infra: Infra, services: dict[str, ServiceProc], rnd: random.Random,
                 outputs: dict[str, str], started: list[ServiceProc] | None = None) -> tuple[FaultRecord, str]:
    """Fault names: kill:<svc>, failpoint:<point>:<svc>, wedge:<svc>, scale-up:<svc>, scale-down:<svc>, kafka, kafka-leader,
    kafka-controller, postgres, smtp. Returns the record and the topic whose next message shows the system working
    again. `started` collects every process ever started (their logs tell who owned what)."""
    kind, _, rest = fault.partition(":")
    if kind == "failpoint":
        point, _, target = rest.rpartition(":")
    else:
        point, target = "", rest or kind
    rec = FaultRecord(kind=f"{kind}:{point}" if point else kind, target=target, injected_at=now())
    output = outputs.get(target.split("-", 1)[0], next(iter(outputs.values())))  # "tasks-2" writes what "tasks" writes
    if kind == "kill":
        svc = services[target]
        await asyncio.sleep(rnd.uniform(0, 0.3))  # a random moment of the stream (mid-batch under load)
        rec.injected_at = now()
        svc.kill()
        svc.start()
    elif kind == "failpoint":
        # Only one replica's relay publishes at a time (an advisory lock), and nobody outside knows which: a relay
        # failpoint is armed in every replica of the service, and the one that hits it dies; the others restart.
        base = target.split("-", 1)[0]
        armed = [services[n] for n in replicas_of(services, base)] if point.startswith("relay.") else [services[target]]
        for svc in armed:
            svc.kill()
            svc.start(HUB_FAILPOINT=point)
        deadline = now() + 60
        while now() < deadline and all(svc.alive() for svc in armed):
            await asyncio.sleep(0.05)
        hit = [svc for svc in armed if not svc.alive()]
        for svc in hit:
            svc.kill()  # reaps it and closes its life at the moment it was found gone
        if not hit:
            rec.note = "failpoint never hit"
        else:
            rec.target = hit[0].name
        rec.injected_at = now()
        for svc in armed:
            svc.kill()
            svc.start()
    elif kind == "wedge":
        # its offset commit never returns (as after a broker restart in CI, 2026-12-01, inside aiokafka): the watchdog
        # exits it with WEDGED_EXIT_CODE after the commit timeout, and the Supervisor (which a run with this fault
        # needs) starts it again, as restartPolicy: Always would; its partitions wait, unread, until then
        svc = services[target]
        svc.kill()
        svc.start(HUB_FAILPOINT="consumer.commit_stall", HUB_KAFKA__COMMIT_TIMEOUT_SECONDS="5")
        wedged_at = svc.starts
        deadline = now() + 90
        while now() < deadline and svc.starts == wedged_at:  # the Supervisor restarted it
            await asyncio.sleep(0.05)
        rec.note = "exited wedged, restarted" if svc.starts > wedged_at else "NEVER EXITED WEDGED"
    elif kind == "scale-up":  # one more replica joins the group mid-stream (a rebalance during batches)
        index = max([1, *(int(n.rsplit("-", 1)[1]) for n in replicas_of(services, target) if n != target)]) + 1
        replica = services[target].replica(index)
        replica.start()
        if started is not None:
            started.append(replica)
        await replica.wait_ready(180)
        rec.injected_at = now()
        services[replica.name] = replica
        rec.note = f"{len(replicas_of(services, target))} replicas"
    elif kind == "scale-down":  # ... the newest leaves gracefully (SIGTERM: its batch commits, LeaveGroup)
        name = replicas_of(services, target)[-1]
        assert name != target, f"scale-down:{target} with one replica"
        services.pop(name).stop()
        rec.note = f"{len(replicas_of(services, target))} replicas"
    elif kind in ("kafka-leader", "kafka-controller"):
        assert isinstance(infra, ClusterInfra), f"{kind} needs a cluster"
        if kind == "kafka-leader":
            node = await infra.busiest_leader()
            rec.note = f"node {node} led the busiest partitions"
        else:
            node, epoch = infra.active_controller()
            rec.note = f"node {node} was the active controller (epoch {epoch})"
        rec.target = f"broker {node}"
        rec.injected_at = now()
        await infra.restart_node(node, down=2.0)
        if kind == "kafka-controller":
            after, epoch_after = infra.active_controller()
            rec.note += f"; then node {after} (epoch {epoch_after})"
            if epoch_after <= epoch:
                rec.note += " — NO NEW CONTROLLER ELECTED"
    elif kind == "kafka":
        await infra.restart_kafka(down=2.0)
    elif kind == "postgres":
        await infra.restart_pg(down=2.0)
    elif kind == "smtp":
        infra.smtp.stop()
        await asyncio.sleep(6.0)
        infra.smtp.start()
        output = topics.NOTIFICATION_OUTCOMES
    else:
        raise ValueError(fault)
    rec.down_s = now() - rec.injected_at
    return rec, output


class Recovery:
    """Waits until, after a fault, the services answer /readyz and the lag is back to normal."""

    def __init__(self, lag: LagProbe, watcher: Watcher, services: list[ServiceProc], group_topics: dict[str, list[str]],
                 normal_lag: int, output_topic: str) -> None:
        self.lag = lag
        self.watcher = watcher
        self.services = services
        self.group_topics = group_topics
        self.normal_lag = normal_lag
        self.output_topic = output_topic

    async def wait(self, record: FaultRecord, timeout: float, output_topic: str | None = None) -> None:
        while now() - record.injected_at < timeout:
            if record.first_output_s is None:
                t = self.watcher.first_after(record.injected_at + record.down_s, output_topic or self.output_topic)
                if t is not None:
                    record.first_output_s = t - record.injected_at
            ready = all([await s.ready() for s in self.services])
            if ready and record.first_output_s is not None:
                lags = [await self.lag.lag(g, ts) for g, ts in self.group_topics.items()]
                if all(v is not None and v <= self.normal_lag for v in lags):
                    record.recovered_s = now() - record.injected_at
                    return
            await asyncio.sleep(0.25)


# --- checks ----------------------------------------------------------------------------------------


async def check_echo(infra: Infra, traffic: PingTraffic, figures: Figures) -> None:
    """Exactly one effect per accepted ping; every bad input dead-lettered once at least, with its reason."""
    conn = await asyncpg.connect(infra.admin_dsn)
    try:
        rows = await conn.fetch("SELECT event_id, count(*) AS n FROM echo.echo_pings GROUP BY event_id")
        outbox_left = await conn.fetchval("SELECT count(*) FROM echo.outbox")
    finally:
        await conn.close()
    row_ids = {r["event_id"]: r["n"] for r in rows}
    pongs = [r for r in await read_all(infra.bootstrap, topics.TASKS_EVENTS) if r.value]
    pings = await read_all(infra.bootstrap, topics.CRM_INGEST)
    dlq = await read_all(infra.bootstrap, topics.DEAD_LETTERS)

    accepted = set(traffic.accepted)
    figures.accepted = len(accepted)
    figures.events_sent = traffic.messages
    figures.producer_retries = traffic.producer.retries
    if outbox_left:
        figures.problems.append(f"{outbox_left} outbox rows never published")

    # effects: one row and one distinct pong per accepted ping
    pong_ids_by_ping: dict[str, set[str]] = defaultdict(set)
    deliveries: Counter[str] = Counter()
    pong_order: dict[bytes, list[str]] = defaultdict(list)
    for r in pongs:
        ev = parse_event(r.value)
        if ev.event_type != "diag.pong":
            continue
        deliveries[str(ev.event_id)] += 1
        if deliveries[str(ev.event_id)] == 1:
            pong_order[r.key].append(ev.payload.ping_event_id)
        pong_ids_by_ping[ev.payload.ping_event_id].add(str(ev.event_id))
    missing_rows = [e for e in accepted if e not in row_ids]
    missing_pongs = [e for e in accepted if str(e) not in pong_ids_by_ping]
    figures.lost = len(set(missing_rows) | set(missing_pongs))
    figures.duplicated = sum(1 for n in row_ids.values() if n > 1) + sum(1 for s in pong_ids_by_ping.values() if len(s) > 1)
    strays = [e for e in row_ids if e not in accepted]
    if strays:
        figures.problems.append(f"{len(strays)} rows for pings never sent")
    figures.inflight_duplicates = sum(n - 1 for n in deliveries.values())
    if missing_rows:
        figures.problems.append(f"no row for {len(missing_rows)} accepted pings, e.g. {missing_rows[:3]}")
    if missing_pongs:
        figures.problems.append(f"no pong for {len(missing_pongs)} accepted pings, e.g. {missing_pongs[:3]}")

    # per-key order: pongs (first delivery of each) follow the first occurrence of each ping on its partition
    ping_order: dict[bytes, list[str]] = defaultdict(list)
    seen_pings: set[str] = set()
    for r in pings:
        try:
            ev = parse_event(r.value)
        except Exception:
            continue
        if ev.event_type == "diag.ping" and str(ev.event_id) not in seen_pings:
            seen_pings.add(str(ev.event_id))
            ping_order[r.key].append(str(ev.event_id))
    for key, expected in ping_order.items():
        if pong_order.get(key, []) != expected:
            got = pong_order.get(key, [])
            figures.order_violations += 1
            figures.problems.append(f"key {key!r}: pongs out of order or missing ({len(got)} vs {len(expected)} pings)")

    check_dead_letters(dlq, traffic, figures)


def check_dead_letters(dlq: list[Any], traffic: PingTraffic, figures: Figures) -> None:
    """Every bad input, by every consumer group of its topic, in the dead-letter topic with its code and a reason;
    nothing else dead-lettered."""
    by_marker: dict[tuple[str, str], list[Any]] = defaultdict(list)
    known = {m for _, _, m, _ in traffic.bad}
    unexpected = 0
    for r in dlq:
        value = r.value or b""
        h = {k: v.decode("utf-8", "replace") for k, v in r.headers}
        found = MARKER.search(value)
        marker = found.group().decode() if found and found.group().decode() in known else None
        if marker is None:
            unexpected += 1
            figures.problems.append(f"unexpected dead letter from {h.get('x-dlq-consumer')}: {h.get('x-dlq-code')}: "
                                    f"{h.get('x-dlq-reason', '')[:200]}")
            continue
        by_marker[(marker, h.get("x-dlq-consumer", ""))].append(h)
    figures.dlq_unexpected = unexpected
    for kind, code, marker, topic in traffic.bad:
        for consumer in sorted(traffic.consumers.get(topic, {"echo"})):
            figures.dlq_expected += 1
            recs = by_marker.get((marker, consumer), [])
            if not recs:
                figures.problems.append(f"bad input {kind} ({marker}) was not dead-lettered by {consumer}")
                continue
            h = recs[0]
            if h.get("x-dlq-code") != code or not h.get("x-dlq-reason"):
                figures.problems.append(f"bad input {kind}: dead-lettered by {consumer} as {h.get('x-dlq-code')!r} / "
                                        f"{h.get('x-dlq-reason')!r}, expected {code!r}")
                continue
            figures.dlq_found += 1
            figures.dlq_redelivered += len(recs) - 1


async def check_tasks(infra: Infra, traffic: PingTraffic, figures: Figures) -> None:
    """One crm.task.create per flagged PM task of the enabled org and CRM record linked to its project (S5: a CRM
    task on each linked record; deal-1 is linked from the start, the four-service run links more); none for an
    unknown org."""
    commands = [parse_event(r.value) for r in await read_all(infra.bootstrap, topics.CRM_COMMANDS) if r.value]
    creates: dict[tuple[str, str], set[str]] = defaultdict(set)  # (PM task id, CRM record) -> distinct command ids
    deliveries: Counter[str] = Counter()
    for ev in commands:
        if ev.event_type != "crm.task.create":
            continue
        deliveries[str(ev.event_id)] += 1
        task_id = ev.payload.subject.split(" ")[1]
        creates[(task_id, f"{ev.payload.record_type}:{ev.payload.record_id}")].add(str(ev.payload.command_id))
    mirrored = {t for t, _ in creates}
    figures.tasks_expected = len(traffic.pm_tasks)
    figures.accepted += len(traffic.pm_tasks)
    missing = [t for t in traffic.pm_tasks if (t, "deal:deal-1") not in creates]
    doubled = [k for k, ids in creates.items() if len(ids) > 1]
    leaked = [t for t in traffic.pm_tasks_unknown_org if t in mirrored]
    figures.tasks_created = sum(1 for t in traffic.pm_tasks if (t, "deal:deal-1") in creates)
    figures.inflight_duplicates += sum(n - 1 for n in deliveries.values())
    if missing:
        figures.lost += len(missing)
        figures.problems.append(f"tasks: {len(missing)} flagged PM tasks without crm.task.create, e.g. {missing[:3]}")
    if doubled:
        figures.duplicated += len(doubled)
        figures.problems.append(f"tasks: {len(doubled)} (PM task, CRM record) pairs with several crm.task.create, "
                                f"e.g. {doubled[:3]}")
    if leaked:
        figures.problems.append(f"tasks: {len(leaked)} PM tasks of an unknown org were mirrored")


async def check_notifications(infra: Infra, traffic: PingTraffic, figures: Figures) -> None:
    """One e-mail per accepted request (Message-ID = <request_id@...>); a second copy only for a row
    whose send was interrupted by a crash (resent_after_crash > 0), and then it is counted."""
    from hub_devstack.smtp_sink import list_mail, read_mail

    conn = await asyncpg.connect(infra.admin_dsn)
    try:
        rows = {r["request_id"]: r for r in await conn.fetch(
            "SELECT request_id, state, resent_after_crash, attempts FROM notifications.deliveries")}
        outbox_left = await conn.fetchval("SELECT count(*) FROM notifications.outbox")
    finally:
        await conn.close()
    if outbox_left:
        figures.problems.append(f"notifications: {outbox_left} outbox rows never published")
    mails: Counter[uuid.UUID] = Counter()
    for path in list_mail(infra.smtp.maildir):
        mid = str(read_mail(path)["Message-ID"] or "").strip("<> ")
        with contextlib.suppress(ValueError):
            mails[uuid.UUID(mid.split("@", 1)[0])] += 1
    outcomes = [parse_event(r.value) for r in await read_all(infra.bootstrap, topics.NOTIFICATION_OUTCOMES) if r.value]
    sent_ids: dict[str, set[str]] = defaultdict(set)
    suppressed_dup = 0
    for ev in outcomes:
        if ev.event_type == "notification.sent":
            sent_ids[str(ev.payload.request_id)].add(str(ev.event_id))
        elif ev.event_type == "notification.suppressed" and ev.payload.reason_code == "duplicate":
            suppressed_dup += 1
    figures.emails_expected = len(traffic.notify_accepted)
    figures.emails_received = sum(1 for r in traffic.notify_accepted if mails[r] > 0)
    figures.accepted += len(traffic.notify_accepted)
    lost = [r for r in traffic.notify_accepted if mails[r] == 0 or r not in rows or rows[r]["state"] != "sent"]
    if lost:
        figures.lost += len(lost)
        figures.problems.append(f"notifications: {len(lost)} requests without an e-mail / not sent, e.g. "
                                f"{[(str(r), rows[r]['state'] if r in rows else None, mails[r]) for r in lost[:3]]}")
    for r, n in mails.items():
        if n > 1:
            if r in rows and rows[r]["resent_after_crash"] >= n - 1:
                figures.emails_duplicated += n - 1
            else:
                figures.duplicated += 1
                figures.problems.append(f"notifications: {n} e-mails for request {r} without a crash to explain them")
    strays = [r for r in mails if r not in traffic.notify_accepted]
    if strays:
        figures.problems.append(f"notifications: {len(strays)} e-mails for requests never accepted")
    doubled_outcomes = [r for r, ids in sent_ids.items() if len(ids) > 1]
    if doubled_outcomes:
        figures.duplicated += len(doubled_outcomes)
        figures.problems.append(f"notifications: {len(doubled_outcomes)} requests with several distinct notification.sent events")
    missing_outcomes = [r for r in traffic.notify_accepted if str(r) not in sent_ids]
    if missing_outcomes:
        figures.problems.append(f"notifications: {len(missing_outcomes)} sent mails without notification.sent")
    if suppressed_dup < traffic.notify_rerequested:
        figures.problems.append(f"notifications: {traffic.notify_rerequested} re-announced requests, only {suppressed_dup} "
                                "notification.suppressed(duplicate)")


async def negative_controls(infra: Infra, traffic: PingTraffic) -> list[str]:
    """The checks must be able to fail: take one effect away, add one, and see each reported (then undo)."""
    import shutil

    from hub_devstack.smtp_sink import list_mail, read_mail

    failures: list[str] = []
    victim = next(iter(traffic.accepted))
    conn = await asyncpg.connect(infra.admin_dsn)
    try:
        row = await conn.fetchrow("DELETE FROM echo.echo_pings WHERE event_id = $1 RETURNING *", victim)
        f = Figures("control")
        await check_echo(infra, traffic, f)
        if f.lost != 1:
            failures.append(f"a deleted echo row was not reported as lost (lost={f.lost})")
        await conn.execute("INSERT INTO echo.echo_pings SELECT * FROM json_populate_record(NULL::echo.echo_pings, $1::json)",
                           json.dumps(dict(row), default=str))
        clean = {r["request_id"] for r in await conn.fetch("SELECT request_id FROM notifications.deliveries WHERE resent_after_crash = 0")}
    finally:
        await conn.close()
    files = [p for p in list_mail(infra.smtp.maildir)
             if uuid.UUID(str(read_mail(p)["Message-ID"]).strip("<> ").split("@")[0]) in clean]
    if len(files) < 2:
        return failures + ["too few e-mails for the negative controls"]
    copy = files[0].with_name("zz-control-copy.eml")
    shutil.copy(files[0], copy)
    f = Figures("control")
    await check_echo(infra, traffic, f)
    await check_notifications(infra, traffic, f)
    copy.unlink()
    if f.duplicated != 1:
        failures.append(f"a second e-mail without a crash was not reported as duplicated (duplicated={f.duplicated})")
    hidden = infra.root / "control-hidden.eml"
    shutil.move(files[1], hidden)
    f = Figures("control")
    await check_echo(infra, traffic, f)
    await check_notifications(infra, traffic, f)
    shutil.move(hidden, files[1])
    if f.lost != 1:
        failures.append(f"a missing e-mail was not reported as lost (lost={f.lost})")
    return failures


# --- the report ----------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "faults"


MAX_PROBLEMS_SHOWN = 40
MAX_PROBLEMS_KEPT = 200
"""LAST_RUN.md lists the first 40 problems of a run and its JSON the first 200, with how many more there were (a
run that went wrong can have thousands, e.g. one per bad input a stuck relay never dead-lettered)."""


def write_last_run(figures: Figures) -> Path:
    """docs/faults/last_run_<mode>.json, and LAST_RUN.md rendered from the last run of each mode."""
    DOCS.mkdir(parents=True, exist_ok=True)
    data = figures.to_json()
    data["problems_total"] = len(data["problems"])
    if len(data["problems"]) > MAX_PROBLEMS_KEPT:
        more = len(data["problems"]) - MAX_PROBLEMS_KEPT
        data["problems"] = [*data["problems"][:MAX_PROBLEMS_KEPT], f"… and {more} more of the same kinds"]
    (DOCS / f"last_run_{figures.mode}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return render_last_run()


def render_last_run() -> Path:
    """LAST_RUN.md from the last saved run of each mode."""
    parts = [
        "# Fault suite: figures of the last run",
        "",
        "Written by `tests/faults` at the end of every run (`make faults` = the long run; the short run is part of",
        "`make test`). What the suite does and checks: [tests/faults/README.md](../../tests/faults/README.md).",
        "",
    ]
    for mode in ("hub-long", "hub-short", "long", "short"):
        path = DOCS / f"last_run_{mode}.json"
        if not path.exists():
            parts += [f"## {mode} run", "", "not run yet", ""]
            continue
        d = json.loads(path.read_text())
        parts += [f"## {mode} run — {d['finished_at']}, {d['duration_s']:.0f} s", "",
                  *([f"Shape: {d['cluster']}", ""] if d.get("cluster") else []),
                  "| figure | value |", "|---|---|",
                  f"| events sent | {d['events_sent']} ({d['accepted']} distinct accepted) |",
                  f"| bad / special inputs injected | {', '.join(f'{k} {v}' for k, v in sorted(d['injected'].items()))} |",
                  f"| faults injected | {len(d['faults'])}: {', '.join(f'{k} {v}' for k, v in sorted(d['fault_counts'].items()))} |",
                  f"| lost | {d['lost']} |",
                  f"| duplicated effects | {d['duplicated']} |",
                  f"| in-flight duplicates (re-published, absorbed) | {d['inflight_duplicates']} |",
                  f"| bad inputs in the dead-letter topic with code + reason | {d['dlq_found']} / {d['dlq_expected']} "
                  f"({d['dlq_redelivered']} re-delivered copies, {d['dlq_unexpected']} unexpected) |",
                  f"| per-key order violations | {d['order_violations']} |",
                  f"| e-mails | {d['emails_received']} / {d['emails_expected']} ({d['emails_duplicated']} counted in-flight duplicates) |",
                  f"| flagged PM tasks → exactly one crm.task.create | {d.get('tasks_created', 0)} / {d.get('tasks_expected', 0)} |",
                  *[f"| {k} | {v[0]} / {v[1]} |" for k, v in d.get("effects", {}).items()],
                  *([f"| partitions owned by two members (coordinator, {d['ownership_samples']} samples) | {len(d['owned_twice'])} |",
                     f"| partitions two live replicas believed they owned (their logs, {d['ownership_intervals']} intervals) | "
                     f"{len(d['ownership_overlaps'])} |"] if d.get("ownership_intervals") else []),
                  f"| final consumer lag | {d['final_lag']} |",
                  f"| services ready at the end | {', '.join(k + ('' if v else ' NOT') for k, v in d['services_ready'].items())} |",
                  "", "| fault | target | down (s) | first output (s) | recovered (s) |", "|---|---|---|---|---|"]
        for f in d["faults"]:
            fo = "-" if f["first_output_s"] is None else f"{f['first_output_s']:.1f}"
            rec = "**not recovered**" if f["recovered_s"] is None else f"{f['recovered_s']:.1f}"
            parts.append(f"| {f['kind']} | {f['target']} | {f['down_s']:.1f} | {fo} | {rec} |")
        if d["problems"]:
            shown = d["problems"][:MAX_PROBLEMS_SHOWN]
            total = d.get("problems_total", len(d["problems"]))
            more = total - len(shown)
            parts += ["", f"Problems ({total}):", *[f"- {p}" for p in shown],
                      *([f"- … and {more} more (last_run_{mode}.json keeps {MAX_PROBLEMS_KEPT})"] if more else [])]
        parts.append("")
    parts += [
        "## Reading the figures",
        "",
        "- *lost* / *duplicated effects*: accepted inputs with no effect / with two different effects (rows, pong",
        "  events, `crm.task.create` commands, e-mails without a crash to explain them). Both must be 0.",
        "- *in-flight duplicates*: the same event (same event id) published twice because a relay was killed between",
        "  publishing and deleting its outbox rows; consumers' inboxes absorb them. Counted, allowed.",
        "- *counted in-flight duplicate e-mails*: a second copy of a mail whose sender died after the SMTP server",
        "  accepted it and before the row was marked sent (`resent_after_crash` > 0); same Message-ID. Allowed, counted.",
        "- *re-delivered dead-letter copies*: a batch replayed after a crash dead-letters its bad messages again",
        "  (known platform limitation, `tests/faults/test_dead_letter_replay.py`); the copies share",
        "  `x-dlq-topic/partition/offset`.",
        "- *hub-short* / *hub-long*: all four services with replicas on a three-broker cluster (`test_faults_hub.py`);",
        "  *short* / *long*: echo, tasks and notifications on one broker (`test_faults.py`). `kafka-leader` kills the",
        "  broker leading the busiest partitions, `kafka-controller` the active KRaft controller (target: the node).",
        "- *partitions owned by two*: the coordinator's view sampled every 0.2 s, and the replicas' own logs",
        "  (assigned → revoked or process gone); both must be 0.",
        "- *recovered*: every service answers `/readyz` 200, each consumer group's lag is back under the normal",
        "  level and output was seen again. After a SIGKILL this takes ~10 s: the dead consumer's group membership",
        "  must expire (Kafka session timeout, 10 s) before its partitions are handed to the restarted process.",
        "  The hub runs so far shared the 2 cores with seven other test sessions (load 25-50): there a service",
        "  takes 25-60 s to start and a Kafka node ~90 s, and those dominate the recovery times.",
        "",
    ]
    out = DOCS / "LAST_RUN.md"
    out.write_text("\n".join(parts))
    return out


class Supervisor:
    """What a `restartPolicy: Always` does for the suite: a replica that exits wedged (`WEDGED_EXIT_CODE`, its offset
    commit never returned, see KafkaSettings.commit_timeout_seconds) is started again. Only that exit code: the
    suite's own kills and failpoint deaths are restarted by the fault that caused them."""

    def __init__(self, services: dict[str, ServiceProc], interval: float = 0.5) -> None:
        self.services = services
        self.interval = interval
        self.restarts: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            for name, svc in list(self.services.items()):
                if svc.proc is not None and svc.proc.poll() == WEDGED_EXIT_CODE:
                    svc._ended()
                    self.restarts[name] += 1
                    print(f"[faults] {name} exited wedged (code {WEDGED_EXIT_CODE}); restarted", flush=True)
                    svc.start()
            await asyncio.sleep(self.interval)


async def stop_everything(figures: Figures, started: float, *, traffic_task: asyncio.Task[Any] | None,
                          watcher: Watcher | None, ownership: OwnershipWatch | None, producer: Producer | None,
                          services: dict[str, ServiceProc], infra: Infra) -> None:
    """The end of a run, whatever happened: stop the traffic and the watchers (keeping what the ownership watch
    saw), the producer, every service and the servers; the run's duration."""
    if traffic_task is not None and not traffic_task.done():
        traffic_task.cancel()
    if watcher is not None:
        await watcher.stop()
    if ownership is not None:
        await ownership.stop()
        figures.ownership_samples, figures.owned_twice = ownership.samples, ownership.owned_twice
        figures.most_members = ownership.most_members
    if producer is not None:
        await producer.close()
    for svc in services.values():
        svc.stop()
    infra.stop()
    figures.duration_s = now() - started


FAULT_NOT_AS_PLANNED = ("never hit", "NEVER EXITED WEDGED", "NO NEW CONTROLLER")
"""Notes `inject` leaves on a fault that did not happen as planned: the run did not test what it says."""


def conclude(figures: Figures, tmp: str | Path, logdir: Path, recovery_timeout: float) -> Figures:
    """What every run checks beyond its own effects (each fault recovered, no partition owned twice, ownership
    sampled, lag 0, services ready), then the report: printed, written to LAST_RUN.md, and the run's directory
    kept only when something is wrong."""
    for f in figures.faults:
        if f.recovered_s is None:
            figures.problems.append(f"no recovery within {recovery_timeout:.0f}s after {f.kind} of {f.target}")
        if any(flag in f.note for flag in FAULT_NOT_AS_PLANNED):
            figures.problems.append(f"{f.kind} of {f.target}: {f.note}")
    if figures.owned_twice:
        figures.problems.append(f"partitions owned by two members at once (coordinator): {figures.owned_twice[:5]}")
    if figures.ownership_samples == 0:
        figures.problems.append("the partition ownership was never sampled")
    if figures.final_lag != 0:
        figures.problems.append(f"consumer lag at the end: {figures.final_lag}")
    if not all(figures.services_ready.values()):
        figures.problems.append("a service is not ready at the end")
    print("\n" + figures.text(), flush=True)
    print(f"[faults] written {write_last_run(figures)}", flush=True)
    if figures.problems:
        print(f"[faults] kept {tmp} (service logs in {logdir})", flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def assert_clean(figures: Figures) -> None:
    assert figures.lost == 0, figures.text()
    assert figures.duplicated == 0, figures.text()
    assert figures.order_violations == 0, figures.text()
    assert figures.dlq_found == figures.dlq_expected, figures.text()
    assert figures.dlq_unexpected == 0, figures.text()
    assert not figures.problems, figures.text()
