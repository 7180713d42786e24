"""Pieces of `make bench`: where the stack is, a fresh database, service processes, producing and collecting.

Why it is shaped like this:
- every service runs as its own process (as in production), so its resident memory
  can be sampled with psutil and the bench's own CPU use stays out of its profile;
- each run gets a fresh topic prefix and fresh databases, so figures never include
  a previous run's backlog or tables;
- latency is measured from the ingest envelope's `occurred_at` (set the moment the
  bench produces it) to the moment the bench reads the output event whose
  `causation_id` is that ingest event: the whole path, relay and broker included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- where the stack is -----------------------------------------------------------------------------


@dataclass
class Infra:
    bootstrap: str
    admin_dsn: str
    source: str  # how it was found, printed in the results
    kafka: Any = None  # hub_devstack.kafka.KafkaAccess: the principals' credentials on a secured broker

    @property
    def access(self) -> Any:
        from hub_devstack.kafka import KafkaAccess

        return self.kafka or KafkaAccess(self.bootstrap)

    def options(self) -> dict[str, Any]:
        """aiokafka options of the bench's own clients (seeding, collecting, lag): the admin's. The service
        under test connects as its own principal (`Pipeline`)."""
        return self.access.client_options()


def find_infra() -> Infra:
    """HUB_BENCH_KAFKA / HUB_BENCH_PG_ADMIN_DSN, else var/local/stack.json, else start the local stack."""
    kafka = os.environ.get("HUB_BENCH_KAFKA")
    pg = os.environ.get("HUB_BENCH_PG_ADMIN_DSN")
    if kafka and pg:
        return Infra(kafka, pg, "HUB_BENCH_KAFKA / HUB_BENCH_PG_ADMIN_DSN")
    state_dir = Path(os.environ.get("HUB_STATE_DIR", ROOT / "var" / "local"))
    stack_json = state_dir / "stack.json"
    data: dict[str, Any] = {}
    source = f"{stack_json}"
    if stack_json.exists():
        data = json.loads(stack_json.read_text())
    if not (data.get("kafka", {}).get("bootstrap_servers") and data.get("postgres", {}).get("admin_dsn")) or not _reachable(data):
        from hub_devstack.stack import start_infra

        log(f"no running local stack in {state_dir}: starting it (hub_devstack.stack.start_infra)")
        data = start_infra(state_dir)
        source = f"started by the bench with hub_devstack.stack.start_infra({state_dir})"
    access = None
    if not kafka:
        from hub_devstack.stack import kafka_access

        access = kafka_access(data)
    return Infra(kafka or data["kafka"]["bootstrap_servers"], pg or data["postgres"]["admin_dsn"], source, access)


def _reachable(data: dict[str, Any]) -> bool:
    try:
        host, _, port = data["kafka"]["bootstrap_servers"].split(",")[0].rpartition(":")
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            pass
        return True
    except Exception:
        return False


def with_database(dsn: str, database: str) -> str:
    from hub_devstack.provision import with_database as wd

    return wd(dsn, database)


async def server_versions(infra: Infra) -> dict[str, str]:
    import asyncpg

    out = {"python": platform.python_version()}
    conn = await asyncpg.connect(infra.admin_dsn)
    try:
        out["postgresql"] = (await conn.fetchval("SHOW server_version")).split()[0]
        out["pg_fsync"] = await conn.fetchval("SHOW fsync")
        out["pg_synchronous_commit"] = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    out["kafka"] = kafka_version()
    import aiokafka
    import asyncpg as apg

    out["aiokafka"] = aiokafka.__version__
    out["asyncpg"] = apg.__version__
    return out


def kafka_version() -> str:
    """The broker's version, from the jars the local stack runs (the protocol does not tell it)."""
    with contextlib.suppress(Exception):
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "kafka.Kafka" in cmd or "kafka-server" in cmd:
                import re

                m = (re.search(r"kafka_[0-9.]+-([0-9][0-9.]+[0-9])\.jar", cmd) or re.search(r"kafka-clients-([0-9.]+)\.jar", cmd)
                     or re.search(r"kafka-([0-9]+\.[0-9]+\.[0-9]+)/jars", cmd))
                if m:
                    return m.group(1)
                return "running (version not found in its classpath)"
    return "unknown"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(Exception):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpus_usable": str(len(os.sched_getaffinity(0))),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "cpu": cpu,
        "os": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


# -- databases ---------------------------------------------------------------------------------------


@dataclass
class Databases:
    infra: Infra
    names: list[str] = field(default_factory=list)

    async def create(self, services: Iterable[str], tag: str) -> tuple[str, dict[str, str]]:
        """A fresh database with one role + schema per service; returns (name, service -> DSN)."""
        from hub_devstack.provision import create_database, provision_service

        name = f"bench_{tag}_{uuid.uuid4().hex[:6]}"
        await create_database(self.infra.admin_dsn, name)
        self.names.append(name)
        dsns = {s: await provision_service(self.infra.admin_dsn, name, s, s) for s in services}
        return name, dsns

    async def drop_all(self) -> None:
        from hub_devstack.provision import drop_database

        for name in self.names:
            with contextlib.suppress(Exception):
                await drop_database(self.infra.admin_dsn, name)


# -- a service process ----------------------------------------------------------------------------------


class ServiceProcess:
    """One service as a child process, with its RSS sampled every 0.2 s from a thread."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_file: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.cmd = cmd
        self.cwd = cwd
        self.env = env
        self.log_file = log_file
        self.port = int(env["HUB_HTTP_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self.rss_samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.cwd)
        self._sampler = threading.Thread(target=self._sample, daemon=True, name=f"rss-{self.name}")
        self._sampler.start()

    def _sample(self) -> None:
        assert self.proc is not None
        try:
            p = psutil.Process(self.proc.pid)
            while not self._stop.is_set():
                rss = p.memory_info().rss
                self.peak_rss = max(self.peak_rss, rss)
                self.rss_samples.append((time.time(), rss))
                self._stop.wait(0.2)
        except psutil.Error:
            pass

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/readyz"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_file}")
            try:
                ok = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).status == 200)
                if ok:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_file}")
            await asyncio.sleep(0.3)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def idle_cpu_percent(self, seconds: float = 5.0) -> float:
        """CPU the idle service uses (its fetch polls, relay polls, health loops), as % of one core."""
        p = psutil.Process(self.pid)
        before = sum(p.cpu_times()[:2])
        await asyncio.sleep(seconds)
        return 100 * (sum(p.cpu_times()[:2]) - before) / seconds

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far. CPU per event is the figure a busy shared machine disturbs
        least: a rate falls when other processes take the cores, the work per event does not."""
        with contextlib.suppress(psutil.Error):
            return sum(psutil.Process(self.pid).cpu_times()[:2])
        return float("nan")

    def current_rss(self) -> int:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.pid).memory_info().rss
        return 0

    async def stop(self) -> None:
        self._stop.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


# -- Kafka ------------------------------------------------------------------------------------------------


def producer(options: dict[str, Any]) -> AIOKafkaProducer:
    """Batched and safe, like the relay's producer (idempotent, acks=all). `options`: `Infra.options()`."""
    return AIOKafkaProducer(**options, enable_idempotence=True, acks="all", linger_ms=5,
                            max_batch_size=256 * 1024, request_timeout_ms=30000)


class Collector:
    """Reads an output topic; matches each output event to the ingest event that caused it."""

    def __init__(self, options: dict[str, Any], topic: str, output_type: str) -> None:
        self.options = options
        self.topic = topic
        self.output_type = output_type
        self.sent_at: dict[str, float] = {}  # ingest event_id -> occurred_at (epoch seconds)
        self.latencies: list[tuple[float, float]] = []  # (arrival, latency seconds)
        self.publish_latencies: list[float] = []  # ingest occurred_at -> output record's CreateTime (relay send)
        self.arrivals: list[float] = []
        self.other = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(self.topic, **self.options, group_id=None,
                                          auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20,
                                          max_partition_fetch_bytes=4 * 2**20)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        loads = json.loads
        while True:
            batch = await self._consumer.getmany(timeout_ms=50, max_records=5000)
            now = time.time()
            for records in batch.values():
                for r in records:
                    env = loads(r.value)
                    if env.get("event_type") != self.output_type:
                        self.other += 1
                        continue
                    t0 = self.sent_at.get(env.get("causation_id"))
                    if t0 is None:
                        self.other += 1
                        continue
                    self.arrivals.append(now)
                    self.latencies.append((now, now - t0))
                    self.publish_latencies.append(r.timestamp / 1000 - t0)

    @property
    def received(self) -> int:
        return len(self.arrivals)

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.received < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def reset(self) -> None:
        self.latencies.clear()
        self.publish_latencies.clear()
        self.arrivals.clear()
        self.sent_at.clear()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer:
            await self._consumer.stop()


class LagProbe:
    """Consumer-group lag of a service on its ingest topics (end offsets minus committed offsets)."""

    def __init__(self, options: dict[str, Any], group: str, topics: list[str]) -> None:
        self.options = options
        self.group = group
        self.topics = topics
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(**self.options)
        await self.admin.start()
        self.consumer = AIOKafkaConsumer(**self.options, enable_auto_commit=False)
        await self.consumer.start()
        for t in self.topics:
            parts = self.consumer.partitions_for_topic(t)
            if not parts:
                await self.consumer._client.force_metadata_update()  # noqa: SLF001
                parts = self.consumer.partitions_for_topic(t) or set()
            self.partitions += [TopicPartition(t, p) for p in sorted(parts)]

    async def lag(self) -> int:
        assert self.admin and self.consumer
        ends = await self.consumer.end_offsets(self.partitions)
        committed = await self.admin.list_consumer_group_offsets(self.group, partitions=self.partitions)
        total = 0
        for tp in self.partitions:
            c = committed.get(tp)
            off = c.offset if c is not None and c.offset >= 0 else 0
            total += max(0, ends[tp] - off)
        return total

    async def stop(self) -> None:
        if self.consumer:
            await self.consumer.stop()
        if self.admin:
            await self.admin.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def steady_rate(arrivals: list[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Events per second between the 10th and 90th percentile arrival (start-up and tail left out)."""
    n = len(arrivals)
    if n < 20:
        return n / max(1e-9, (arrivals[-1] - arrivals[0])) if n > 1 else 0.0
    a = sorted(arrivals)
    i, j = int(n * lo), int(n * hi)
    return (j - i) / max(1e-9, a[j] - a[i])


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Profile a service process for `seconds` with py-spy (run through uvx when not installed)."""
    import shutil

    exe = shutil.which("py-spy") or next((str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None)
    cmd = [exe] if exe else (["uvx", "--from", "py-spy", "py-spy"] if shutil.which("uvx") else None)
    if cmd is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*cmd, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw",
                             "--rate", "200", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_frames(raw_file: Path, n: int = 25, own: bool = True) -> list[tuple[str, float]]:
    """From py-spy's collapsed stacks: share of samples per function (own time, or inclusive)."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw_file.read_text().splitlines():
        stack, _, c = line.rpartition(" ")
        if not c.isdigit():
            continue
        k = int(c)
        total += k
        frames = stack.split(";")
        if own:
            counts[frames[-1]] = counts.get(frames[-1], 0) + k
        else:
            for f in set(frames):
                counts[f] = counts.get(f, 0) + k
    return [(f, c / total) for f, c in sorted(counts.items(), key=lambda x: -x[1])[:n]] if total else []


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


async def delete_topics(infra: Infra, prefix: str) -> None:
    """A run's topics (and their ACLs) go with it: partitions left on the broker fill its heap and slow every later run."""
    try:
        await infra.access.unsecure(prefix)
    except Exception as exc:  # the figures are taken; say so and go on
        log(f"could not delete the topics {prefix}*: {exc!r}")


async def broker_partitions(infra: Infra) -> int:
    """Partitions on the broker before the run: a broker crowded by old topics is slower (heap, GC)."""
    admin = AIOKafkaAdminClient(**infra.options(), request_timeout_ms=30000)
    await admin.start()
    try:
        topics = await admin.describe_topics(await admin.list_topics())
        return sum(len(t.get("partitions", [])) for t in topics)
    finally:
        await admin.close()


def python_cmd(module_or_code: str) -> list[str]:
    if module_or_code.startswith("-c "):
        return [sys.executable, "-c", module_or_code[3:]]
    return [sys.executable, "-m", module_or_code]


Clock = Callable[[], float]
