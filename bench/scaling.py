"""Scaling table: one service with 1, 2 and 3 replicas in the same run, and where the ceiling is.

`python -m bench.scaling` alone, or as part of `make bench` (HUB_BENCH_SCALING=0 leaves it out). Each row: a fresh
database and topic prefix, N processes of the service in one consumer group (checked settled: every partition owned
once, by N members), the same backlog produced as fast as the producer goes, and the CPU each process used during
the run (% of one core) so the table says which process is at its limit.

Settings: HUB_BENCH_SCALING_SERVICE (tasks), HUB_BENCH_SCALING_REPLICAS (1,2,3), HUB_BENCH_SCALING_EVENTS (6000).
Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from aiokafka.admin import AIOKafkaAdminClient

from bench import harness as h
from bench.scenarios import SCENARIOS
from hub_platform.groups import describe_group, topic_partitions, wait_settled

START, END = "<!-- scaling:start (written by make bench / python -m bench.scaling) -->", "<!-- scaling:end -->"


def _listener_pid(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class CpuWatch:
    """CPU seconds of named process groups over a window (the PostgreSQL group includes its backends)."""

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self.groups = groups

    def __enter__(self) -> CpuWatch:
        self.t0 = time.monotonic()
        self.before = {k: _cpu_seconds(v) for k, v in self.groups.items()}
        self.machine_before = psutil.cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        self.percent = {k: 100 * (_cpu_seconds(v) - self.before[k]) / wall for k, v in self.groups.items()}
        after = psutil.cpu_times()
        busy = sum(after) - after.idle - after.iowait - (sum(self.machine_before) - self.machine_before.idle - self.machine_before.iowait)
        self.machine = 100 * busy / wall  # all CPUs, in % of one core (200 = both cores busy)
        self.others = max(0.0, self.machine - sum(self.percent.values()))


async def one_row(service: str, replicas: int, events: int, infra: h.Infra, dbs: h.Databases, run_dir: Path) -> dict[str, Any]:
    from bench.run import Pipeline

    sc = SCENARIOS[service]
    name, dsns = await dbs.create([sc.service], f"{sc.name}_x{replicas}")
    p = Pipeline(sc, infra, dsns[sc.service], h.with_database(infra.admin_dsn, name), run_dir)
    extra = [h.ServiceProcess(f"{sc.name}-{i}", p.proc.cmd, {**p.proc.env, "HUB_HTTP_PORT": str(h.free_port())},
                              run_dir / f"{sc.name}-x{replicas}-{i}.log") for i in range(2, replicas + 1)]
    admin = AIOKafkaAdminClient(**infra.options())
    await admin.start()
    try:
        await p.start()
        for proc in extra:
            proc.start()
        await asyncio.gather(*(proc.wait_ready(timeout=300) for proc in extra))
        group = p.prefix + sc.service  # KafkaSettings.group_id: the service's name under the run's topic prefix
        topics = sorted(t for t in (await describe_group(admin, group)).topics if t.startswith(p.prefix))
        partitions = await topic_partitions(admin, topics)
        settle_s, view = await wait_settled(admin, group, partitions, members=replicas)
        assert not view.owned_twice(), view
        await p.max_rate(min(1000, events), None)  # warm-up (and the group has settled under load)
        await p.checkpoint()
        pg_port = urlsplit(infra.admin_dsn).port or 5432
        kafka_port = int(infra.bootstrap.split(",")[0].rsplit(":", 1)[1])
        groups = {f"{sc.name} #{i + 1}": _tree(proc.pid) for i, proc in enumerate([p.proc, *extra])}
        groups["kafka"] = _tree(_listener_pid(kafka_port))
        groups["postgresql"] = _tree(_listener_pid(pg_port))
        groups["bench (producer + reader)"] = [psutil.Process(os.getpid())]
        with CpuWatch(groups) as cpu:
            mx = await p.max_rate(events, None)
        busiest = max(cpu.percent, key=lambda k: cpu.percent[k])
        h.log(f"scaling {sc.name} x{replicas}: {h.fmt_rate(mx['steady_rate'])}/s; CPU % "
              + ", ".join(f"{k} {v:.0f}" for k, v in cpu.percent.items()))
        return {"replicas": replicas, "partitions": len(partitions), "settle_s": settle_s, "steady_rate": mx["steady_rate"],
                "machine_cpu": cpu.machine, "other_cpu": cpu.others, "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                "overall_rate": mx["overall_rate"], "complete": mx["complete"], "cpu": cpu.percent, "busiest": busiest}
    finally:
        await admin.close()
        for proc in extra:
            await proc.stop()
        await p.stop()


async def run(infra: h.Infra, dbs: h.Databases, run_dir: Path) -> dict[str, Any]:
    service = os.environ.get("HUB_BENCH_SCALING_SERVICE", "tasks")
    counts = [int(x) for x in os.environ.get("HUB_BENCH_SCALING_REPLICAS", "1,2,3").split(",") if x.strip()]
    events = int(os.environ.get("HUB_BENCH_SCALING_EVENTS", 6000))
    rows: list[dict[str, Any]] = []
    for n in counts:
        h.log(f"scaling: {service} with {n} replica(s), {events} events as a backlog")
        try:
            rows.append(await one_row(service, n, events, infra, dbs, run_dir))
        except Exception as exc:  # noqa: BLE001 - a row that failed is reported as such; the others stand
            h.log(f"scaling: {service} x{n} failed: {exc!r}")
            rows.append({"replicas": n, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return {"service": service, "events": events, "rows": rows, "cpus": psutil.cpu_count()}


def render(s: dict[str, Any]) -> str:
    rows = [r for r in s["rows"] if "error" not in r]
    base = rows[0]["steady_rate"] if rows and rows[0]["replicas"] == 1 else 0
    out = [f"{s['service']}, {s['events']} events as a backlog per row, {s['cpus']} CPUs shared by everything below. "
           "CPU: % of one core during the run (the PostgreSQL row includes its backends).", ""]
    table_rows = []
    for r in rows:
        service_cpu = [v for k, v in r["cpu"].items() if k.startswith(s["service"])]
        table_rows.append([
            str(r["replicas"]), h.fmt_rate(r["steady_rate"]), f"{r['steady_rate'] / base:.2f}x" if base else "n/a",
            " / ".join(f"{v:.0f}" for v in service_cpu), f"{r['cpu'].get('postgresql', 0):.0f}",
            f"{r['cpu'].get('kafka', 0):.0f}", f"{r['cpu'].get('bench (producer + reader)', 0):.0f}",
            f"{sum(r['cpu'].values()):.0f}", f"{r['other_cpu']:.0f}", f"{r['machine_cpu']:.0f} of {100 * s['cpus']}",
            r["load"], r["busiest"], f"{r['settle_s']:.2f}",
        ])
    out.append(h.table(table_rows, ["replicas", "events/s", "vs 1", "CPU % per replica", "PostgreSQL", "Kafka", "bench",
                                    "ours", "other processes", "machine", "load avg", "busiest of ours",
                                    "group settled (s)"]))
    out += [f"\n{r['replicas']} replica(s): not measured ({r['error']})" for r in s["rows"] if "error" in r]
    return "\n".join(out)


def write(path: Path, text: str) -> None:
    block = f"{START}\n{text}\n{END}"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    if START in current and END in current:
        before, rest = current.split(START, 1)
        _, after = rest.split(END, 1)
        path.write_text(before + block + after)
    else:
        path.write_text(current.rstrip() + "\n\n## Scaling with replicas (latest figures)\n\n" + block + "\n")


async def amain() -> dict[str, Any]:
    infra = h.find_infra()
    run_dir = Path(h.ROOT) / "var" / "bench" / time.strftime("%Y%m%d-%H%M%S-scaling")
    run_dir.mkdir(parents=True, exist_ok=True)
    dbs = h.Databases(infra)
    try:
        return await run(infra, dbs, run_dir)
    finally:
        await dbs.drop_all()


def main() -> None:
    result = asyncio.run(amain())
    text = render(result)
    print(text)
    target = os.environ.get("HUB_BENCH_RESULTS", str(h.ROOT / "bench" / "RESULTS.md"))
    if target != "-":
        write(Path(target), text)
        h.log(f"scaling table written to {target}")


if __name__ == "__main__":
    sys.exit(main())
