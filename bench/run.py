"""`make bench`: baselines, pipeline throughput, latency under load, lag over a sustained run, memory.

Settings (environment):
  HUB_BENCH_KAFKA, HUB_BENCH_PG_ADMIN_DSN  servers to use (default: var/local/stack.json, else start the local stack)
  HUB_BENCH_SERVICES        scenarios, comma-separated (default "tasks,linking,echo")
  HUB_BENCH_EVENTS          events in the maximum-rate run of each service (default 10000)
  HUB_BENCH_DB_EVENTS       events in each direct-database baseline (default 3000)
  HUB_BENCH_RAW_MESSAGES    messages in the raw Kafka baselines (default 100000)
  HUB_BENCH_LATENCY_SECONDS length of each paced latency run (default 30)
  HUB_BENCH_SUSTAIN_SECONDS length of the sustained run at 80% (default 180; 0 = skip)
  HUB_BENCH_SUSTAIN_SERVICE the scenario given the sustained run (default: the first one)
  HUB_BENCH_PROFILE=1       record a py-spy profile of each service during its maximum-rate run
  HUB_BENCH_RESULTS         where to write the results (default bench/RESULTS.md; "-" = do not write)
  HUB_BENCH_KEEP=1          keep the bench databases afterwards
  HUB_BENCH_SCALING=0       leave out the scaling table (1, 2, 3 replicas of tasks: bench/scaling.py)
  HUB_BENCH_BASELINE_REF    a git ref (`make bench BASE=d57f9af`): every scenario also runs with that commit's
                            services (bench/baseline.py), back to back, and the report divides new by old
  HUB_BENCH_SAME_RATE       one more paced latency run at this absolute rate, the same for every tree ("200", or per
                            service "tasks=300,linking=150,echo=600"; default none): the 50%/80% runs put each tree at
                            a share of its own maximum, this one compares the trees under the very same load
Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness as h
from bench import baseline
from bench.baseline import CURRENT, Tree
from bench.scenarios import SCENARIOS, Scenario, new_tag

RUN_DIR = h.ROOT / "var" / "bench"
QUIET_RATE = 10
"""Events/s of the quiet-stream latency run: one event per batch, so it shows the path's floor (poll, one
transaction, relay, broker) without any queueing behind other events."""


def same_rate(service: str) -> float | None:
    """HUB_BENCH_SAME_RATE for `service`: one number for all, or `service=rate` pairs; None where none is given."""
    raw = os.environ.get("HUB_BENCH_SAME_RATE", "").strip()
    if not raw:
        return None
    if "=" not in raw:
        return float(raw)
    rates = dict(part.split("=", 1) for part in raw.split(",") if part.strip())
    return float(rates[service]) if service in rates else None


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


# -- raw Kafka baselines ----------------------------------------------------------------------------


async def kafka_baselines(infra: h.Infra, n: int) -> dict[str, float]:
    from hub_platform.kafka_admin import ensure_topics
    from hub_schema.topics import BY_NAME

    prefix = f"benchraw{new_tag()}."
    await ensure_topics(infra.access.settings(prefix=prefix), [BY_NAME["crm.ingest"]])
    topic = f"{prefix}crm.ingest"
    value = b"x" * 500
    prod = h.producer(infra.options())
    await prod.start()
    try:
        await (await prod.send(topic, value, key=b"warm"))
        t0 = time.perf_counter()
        futs = []
        for i in range(n):
            futs.append(await prod.send(topic, value, key=str(i % 997).encode()))
            if len(futs) >= 5000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
        produce = n / (time.perf_counter() - t0)
    finally:
        await prod.stop()
    from aiokafka import AIOKafkaConsumer

    cons = AIOKafkaConsumer(topic, **infra.options(), group_id=f"benchraw-{new_tag()}",
                            auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 * 2**20)
    await cons.start()
    try:
        got, t0 = 0, None
        while got < n + 1:
            batch = await cons.getmany(timeout_ms=200, max_records=500)
            if t0 is None and batch:
                t0 = time.perf_counter()
            got += sum(len(v) for v in batch.values())
        consume = n / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await cons.stop()
        await h.delete_topics(infra, prefix)
    return {"produce": produce, "consume": consume}


# -- direct-database baselines ------------------------------------------------------------------------


async def db_baselines(sc: Scenario, dsn: str, n: int) -> dict[str, float]:
    """The service's own handler code, on one asyncpg connection (the service handles one batch at a time)."""
    from hub_platform import db
    from hub_platform.consumer import BatchProcessor, HandlerContext
    from hub_schema import encode, parse_event
    from hub_schema.registry import topic_of
    from hub_schema.topics import TopicNames

    router, migrations = sc.load()
    await db.migrate_async(dsn, sc.service, migrations)
    pool = await db.create_pool(dsn, sc.service, min_size=1, max_size=1)
    topics = TopicNames(f"benchdirect{new_tag()}.")
    out: dict[str, float] = {}

    async def one_tx(conn: Any, event: Any) -> None:
        async with conn.transaction():
            await conn.fetchval("INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) "
                                "ON CONFLICT DO NOTHING RETURNING true", sc.service, event.event_id, event.event_type)
            state = await router.load_state(conn, [event])  # a set-based service's state, for this one event
            ctx = HandlerContext(conn=conn, event=event, consumer=sc.service, producer=sc.service, topics=topics, state=state)
            await router.handlers[event.event_type](ctx, event)
            if state is not None:
                await state.flush(conn)

    try:
        tag = new_tag()
        async with pool.acquire() as conn:
            for env in sc.seeds():
                if env is not None:
                    await one_tx(conn, parse_event(encode(env)))
            events = [parse_event(encode(sc.event(i, tag))) for i in range(n)]
            t0 = time.perf_counter()
            for ev in events:
                await one_tx(conn, ev)
            out["db_per_event"] = n / (time.perf_counter() - t0)
            await conn.execute("DELETE FROM outbox")
        # the platform's own batch path (parse + inbox + savepoint + handler + outbox, one tx per 500), no Kafka
        proc = BatchProcessor(pool, router, consumer=sc.service, producer=sc.service, topics=topics)
        tag = new_tag()
        events_in = [sc.event(i, tag) for i in range(n)]
        records = [FakeRecord(topics(topic_of(e.event_type)), 0, i, b"k", encode(e)) for i, e in enumerate(events_in)]
        t0 = time.perf_counter()
        for i in range(0, n, 500):
            await proc.process(records[i:i + 500])
        out["db_platform_batch"] = n / (time.perf_counter() - t0)
    finally:
        await pool.close()
    return out


# -- the pipeline ---------------------------------------------------------------------------------------


class Pipeline:
    def __init__(self, sc: Scenario, infra: h.Infra, dsn: str, admin_db_dsn: str, run_dir: Path,
                 tree: Tree = CURRENT) -> None:
        self.sc = sc
        self.tree = tree
        self.infra = infra
        self.prefix = f"bench{new_tag()}."
        self.admin_db_dsn = admin_db_dsn
        # The service connects as its own principal. A baseline commit may name its consumer group otherwise than
        # the ACLs of the current catalog grant (older commits did not put the topic prefix in it), so a baseline
        # service connects as the broker's super user, which changes nothing it does.
        principal = sc.service if tree is CURRENT else "admin"
        env = {
            "HUB_SERVICE_NAME": sc.service,
            **infra.access.service_env(principal),
            "HUB_KAFKA__TOPIC_PREFIX": self.prefix,
            "HUB_DB__URL": dsn,
            "HUB_HTTP_PORT": str(h.free_port()),
            "HUB_OBS__LOG_LEVEL": os.environ.get("HUB_BENCH_LOG_LEVEL", "warning"),
            **sc.extra_env,
        }
        log_name = sc.name if tree is CURRENT else f"{sc.name}-{tree.label}"
        self.proc = h.ServiceProcess(sc.service, tree.cmd(sc.run), env, run_dir / f"{log_name}.log", cwd=tree.root)
        self.collector = h.Collector(infra.options(), self.prefix + sc.output_topic, sc.output_type)
        self.lag = h.LagProbe(infra.options(), tree.group_id(self.prefix, sc.service), [self.prefix + t for t in sc.ingest_topics])
        self.producer = h.producer(infra.options())
        self.tag = new_tag()
        self.seq = 0

    async def start(self) -> None:
        await self.infra.access.secure(self.prefix)  # on a secured broker: topics and ACLs, as the admin
        self.proc.start()
        await self.proc.wait_ready()
        await self.producer.start()
        await self.collector.start()
        await self.lag.start()
        seeds = self.sc.seeds()
        if seeds:
            from hub_schema import encode
            from hub_schema.registry import topic_of

            sent = 0
            for env in [*seeds, None]:
                if env is None:
                    await self.inbox_at_least(sent, 60)
                    continue
                await self.producer.send_and_wait(self.prefix + topic_of(env.event_type), encode(env), key=env.entity_key.encode())
                sent += 1

    async def inbox_at_least(self, n: int, timeout: float) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_db_dsn)
        try:
            deadline = time.monotonic() + timeout
            while (got := await conn.fetchval(f"SELECT count(*) FROM {self.sc.service}.inbox")) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.sc.name}: only {got} of {n} seed events handled; see {self.proc.log_file}")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def send(self) -> Any:
        from hub_schema import encode

        env = self.sc.event(self.seq, self.tag)
        self.seq += 1
        self.collector.sent_at[str(env.event_id)] = env.occurred_at.timestamp()
        return await self.producer.send(self.prefix + self.ingest_topic(env), encode(env), key=env.entity_key.encode())

    def ingest_topic(self, env: Any) -> str:
        from hub_schema.registry import topic_of

        return topic_of(env.event_type)

    async def max_rate(self, n: int, profile: Path | None) -> dict[str, float]:
        """Produce `n` events as fast as the producer goes; the pipeline works through the backlog."""
        self.collector.reset()
        spy = h.py_spy(self.proc.pid, 20, profile) if profile else None
        cpu0 = self.proc.cpu_seconds()
        t0 = time.time()
        futs = [await self.send() for _ in range(n)]
        await asyncio.gather(*futs)
        produced = time.time()
        ok = await self.collector.wait_for(n, timeout=max(120.0, n / 50))
        cpu = self.proc.cpu_seconds() - cpu0
        arr = self.collector.arrivals
        if spy is not None:
            await asyncio.to_thread(spy.wait)
        return {
            "events": float(self.collector.received), "complete": float(ok),
            "steady_rate": h.steady_rate(arr), "overall_rate": len(arr) / max(1e-9, (max(arr) if arr else t0) - t0),
            "produce_seconds": produced - t0, "cpu_ms_per_event": 1000 * cpu / max(1, self.collector.received),
        }

    async def checkpoint(self) -> None:
        """Flush what earlier runs dirtied (CHECKPOINT) and let the service drain, so a paced run does
        not start inside the previous run's write-back (fsync is on)."""
        import asyncpg

        conn = await asyncpg.connect(self.admin_db_dsn)
        try:
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()
        await asyncio.sleep(2)

    async def paced(self, rate: float, seconds: float, sample_lag: bool = False) -> dict[str, Any]:
        """Produce at `rate` events/s for `seconds`; latency of every event, lag sampled every 2 s."""
        await self.checkpoint()
        self.collector.reset()
        lags: list[tuple[float, int, int]] = []
        sent = 0
        start = time.monotonic()
        next_sample = start
        futs: list[Any] = []
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                futs.append(await self.send())
                sent += 1
            if len(futs) > 2000:
                await asyncio.gather(*futs)
                futs.clear()
            if sample_lag and time.monotonic() >= next_sample:
                next_sample += 2.0
                try:
                    lag = await self.lag.lag()
                except Exception:
                    lag = -1
                lags.append((elapsed, lag, sent - self.collector.received))
            await asyncio.sleep(0.005)
        await asyncio.gather(*futs)
        ok = await self.collector.wait_for(sent, timeout=120)
        lat = [x for _, x in self.collector.latencies]
        consumed = await self.consume_delays()
        res: dict[str, Any] = {
            "target_rate": rate, "sent": sent, "received": self.collector.received, "complete": ok,
            "achieved_rate": sent / seconds,
            "p50_ms": h.percentile(lat, 50) * 1000, "p95_ms": h.percentile(lat, 95) * 1000,
            "p99_ms": h.percentile(lat, 99) * 1000, "max_ms": (max(lat) * 1000) if lat else float("nan"),
            "publish_p50_ms": h.percentile(self.collector.publish_latencies, 50) * 1000,
            "publish_p99_ms": h.percentile(self.collector.publish_latencies, 99) * 1000,
            "consumed_p50_ms": h.percentile(consumed, 50) * 1000, "consumed_p99_ms": h.percentile(consumed, 99) * 1000,
        }
        if sample_lag:
            res["lag_samples"] = lags
            res.update(lag_verdict(lags, seconds))
        return res

    async def consume_delays(self) -> list[float]:
        """occurred_at -> start of the service transaction that handled the event (the inbox row's
        processed_at is the transaction's now()): the broker and consumer-fetch part of the latency."""
        import asyncpg

        sent = self.collector.sent_at
        conn = await asyncpg.connect(self.admin_db_dsn)
        try:
            rows = await conn.fetch(f"SELECT event_id::text AS id, extract(epoch FROM processed_at)::float8 AS t "
                                    f"FROM {self.sc.service}.inbox WHERE event_id = ANY($1::uuid[])", list(sent))
        finally:
            await conn.close()
        return [r["t"] - sent[r["id"]] for r in rows]

    async def stop(self) -> None:
        for c in (self.collector, self.lag):
            try:
                await c.stop()
            except Exception:
                pass
        try:
            await self.producer.stop()
        except Exception:
            pass
        await self.proc.stop()
        await h.delete_topics(self.infra, self.prefix)


def lag_verdict(samples: list[tuple[float, int, int]], seconds: float) -> dict[str, Any]:
    """Bounded = the lag of the last third of the run is not above the first third's (plus one batch)."""
    pts = [(t, lag) for t, lag, _ in samples if lag >= 0]
    if len(pts) < 6:
        return {"lag_bounded": None}
    third = len(pts) // 3
    first = [lag for _, lag in pts[:third]]
    last = [lag for _, lag in pts[-third:]]
    ts = [t for t, _ in pts]
    ls = [lag for _, lag in pts]
    slope = statistics.linear_regression(ts, ls).slope if len(set(ts)) > 1 else 0.0
    bounded = max(last) <= max(first) * 1.5 + 500
    return {"lag_bounded": bounded, "lag_max": max(ls), "lag_mean": statistics.fmean(ls), "lag_first_third_max": max(first),
            "lag_last_third_max": max(last), "lag_slope_per_s": slope, "backlog_max": max(b for _, _, b in samples)}


# -- the whole run -----------------------------------------------------------------------------------------


async def bench_scenario(sc: Scenario, infra: h.Infra, dbs: h.Databases, run_dir: Path, sustain: int,
                         tree: Tree = CURRENT) -> dict[str, Any]:
    """Every figure of one scenario. With a baseline `tree` only the pipeline, latency and memory (the direct-database
    baselines import the handlers into the bench's own process, i.e. the current tree's code)."""
    n_events = env_int("HUB_BENCH_EVENTS", 10000)
    n_db = env_int("HUB_BENCH_DB_EVENTS", 3000)
    lat_seconds = env_int("HUB_BENCH_LATENCY_SECONDS", 30)
    res: dict[str, Any] = {"scenario": sc.name, "description": sc.description, "tree": tree.label}
    label = sc.name if tree is CURRENT else f"{sc.name} ({tree.label}: {tree.ref})"

    if tree is CURRENT:
        direct_name, direct = await dbs.create([sc.service], f"{sc.name}_direct")
        h.log(f"{sc.name}: direct-database baselines ({n_db} events)")
        res.update(await db_baselines(sc, direct[sc.service], n_db))
        h.log(f"{sc.name}: db per-event tx {h.fmt_rate(res['db_per_event'])}/s, platform batch path {h.fmt_rate(res['db_platform_batch'])}/s")

    name, dsns = await dbs.create([sc.service], sc.name)
    p = Pipeline(sc, infra, dsns[sc.service], h.with_database(infra.admin_dsn, name), run_dir, tree)
    try:
        h.log(f"{label}: starting the service process from {tree.root} (log {p.proc.log_file})")
        await p.start()
        res["rss_idle_mb"] = p.proc.current_rss() / 2**20
        res["idle_cpu_percent"] = await p.proc.idle_cpu_percent()
        await p.max_rate(min(1000, n_events), None)  # warm-up
        profile = run_dir / f"{p.proc.log_file.stem}.pyspy.txt" if os.environ.get("HUB_BENCH_PROFILE") else None
        h.log(f"{label}: maximum rate ({n_events} events as a backlog)")
        mx = await p.max_rate(n_events, profile)
        res["max"] = mx
        top = mx["steady_rate"]
        h.log(f"{label}: sustained maximum {h.fmt_rate(top)}/s (overall {h.fmt_rate(mx['overall_rate'])}/s)")
        if profile and profile.exists():
            res["profile_top"] = h.top_frames(profile, 30, own=False)
            res["profile_file"] = str(profile)
        h.log(f"{label}: latency of a quiet stream ({QUIET_RATE}/s for {lat_seconds}s)")
        res["quiet"] = await p.paced(QUIET_RATE, lat_seconds)
        h.log(f"{label}: latency at 50% ({h.fmt_rate(top * 0.5)}/s for {lat_seconds}s)")
        res["at50"] = await p.paced(top * 0.5, lat_seconds)
        if sustain > 0:
            h.log(f"{label}: sustained run at 80% ({h.fmt_rate(top * 0.8)}/s for {sustain}s), lag sampled every 2 s")
            res["at80"] = await p.paced(top * 0.8, sustain, sample_lag=True)
            res["at80"]["seconds"] = sustain
        else:
            h.log(f"{label}: latency at 80% ({h.fmt_rate(top * 0.8)}/s for {lat_seconds}s), lag sampled")
            res["at80"] = await p.paced(top * 0.8, lat_seconds, sample_lag=True)
            res["at80"]["seconds"] = lat_seconds
        if (rate := same_rate(sc.name)) is not None:
            h.log(f"{label}: latency at the same rate for every tree ({h.fmt_rate(rate)}/s for {lat_seconds}s)")
            res["same"] = await p.paced(rate, lat_seconds)
        res["rss_peak_mb"] = p.proc.peak_rss / 2**20
        res["rss_end_mb"] = p.proc.current_rss() / 2**20
    finally:
        await p.stop()
    return res


async def amain() -> dict[str, Any]:
    names = [s.strip() for s in os.environ.get("HUB_BENCH_SERVICES", "tasks,linking,echo").split(",") if s.strip()]
    scenarios = [SCENARIOS[n] for n in names if n in SCENARIOS]
    missing = [n for n in names if n not in SCENARIOS]
    sustain = env_int("HUB_BENCH_SUSTAIN_SECONDS", 180)
    sustain_for = os.environ.get("HUB_BENCH_SUSTAIN_SERVICE", scenarios[0].name if scenarios else "")
    ref = os.environ.get("HUB_BENCH_BASELINE_REF", "").strip()
    base = baseline.checkout(ref) if ref else None  # before anything is started: a bad ref fails at once
    infra = h.find_infra()
    h.log(f"kafka {infra.bootstrap}, postgres {infra.admin_dsn.rsplit('@', 1)[-1]} ({infra.source})")
    partitions = await h.broker_partitions(infra)
    if partitions > 1000:
        h.log(f"the broker already holds {partitions} partitions (old test or bench topics?): expect slower, noisier figures")
    run_dir = RUN_DIR / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": h.machine(), "versions": await h.server_versions(infra), "infra": infra.source,
                               "command": os.environ.get("HUB_BENCH_COMMAND", "make bench"), "scenarios": [],
                               "missing": missing, "run_dir": str(run_dir), "broker_partitions": partitions,
                               "settings": {k: v for k, v in os.environ.items() if k.startswith("HUB_BENCH_") and "DSN" not in k}}
    dbs = h.Databases(infra)
    started = time.monotonic()
    try:
        n_raw = env_int("HUB_BENCH_RAW_MESSAGES", 100000)
        h.log(f"raw Kafka baselines ({n_raw} x 500-byte messages)")
        results["kafka"] = await kafka_baselines(infra, n_raw)
        h.log(f"kafka produce {h.fmt_rate(results['kafka']['produce'])}/s, consume {h.fmt_rate(results['kafka']['consume'])}/s")
        if base is None:
            for sc in scenarios:
                results["scenarios"].append(await bench_scenario(sc, infra, dbs, run_dir, sustain if sc.name == sustain_for else 0))
        else:
            results["baseline"] = {"ref": base.ref, "sha": base.sha, "describe": baseline.describe(base), "scenarios": []}
            for i, sc in enumerate(scenarios):
                # back to back on the same broker and database; which tree goes first alternates per scenario, so
                # neither always gets the fresher (or the more checkpoint-laden) database
                sustain_s = sustain if sc.name == sustain_for else 0
                order = [base, CURRENT] if i % 2 == 0 else [CURRENT, base]
                for tree in order:
                    res = await bench_scenario(sc, infra, dbs, run_dir, sustain_s, tree)
                    (results["scenarios"] if tree is CURRENT else results["baseline"]["scenarios"]).append(res)
        if os.environ.get("HUB_BENCH_SCALING", "1") != "0":
            from bench import scaling

            results["scaling"] = await scaling.run(infra, dbs, run_dir)
    finally:
        if not os.environ.get("HUB_BENCH_KEEP"):
            await dbs.drop_all()
    results["total_seconds"] = time.monotonic() - started
    results["machine"]["load_average_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def main() -> None:
    from bench.report import render, write_results

    results = asyncio.run(amain())
    text = render(results)
    print(text)
    target = os.environ.get("HUB_BENCH_RESULTS", str(h.ROOT / "bench" / "RESULTS.md"))
    if target != "-":
        write_results(Path(target), text, results)
        h.log(f"figures written to {target}")
    if results.get("scaling"):
        from bench import scaling

        print(scaling.render(results["scaling"]))
        if target != "-":
            scaling.write(Path(target), scaling.render(results["scaling"]))
    if "started by the bench" in json.dumps(results, default=str):
        h.log("the local stack started for this run is left up for the next run; `make down` stops it")


if __name__ == "__main__":
    sys.exit(main())
