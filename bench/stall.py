"""`python -m bench.stall`: does a service recover from a short stall, or stay behind?

Runs the tasks service at a steady rate (default 450/s, about half its maximum) for 40 s and
freezes its process (SIGSTOP/SIGCONT) for 0.5 s at 8, 16 and 24 s, once per consumer
`fetch_max_wait_ms` value to compare (default "500,50"). Prints the latency and, for the
last quarter of the run, the batch sizes and the gaps between batches (from the inbox's
`processed_at`, the start of each batch transaction).

Why: with aiokafka one fetch per broker is in flight, and it leaves out the partitions whose
records are still buffered. After a stall the service reads a big batch; while it works, the
next fetch goes out for the quiet topics only and the broker holds it up to
`fetch_max_wait_ms`. The busy partitions wait behind it, the next batch is big again, and the
service alternates big and small batches with a standing backlog for as long as the load
lasts. Figures are printed, never asserted.

Settings: HUB_BENCH_STALL_RATE, HUB_BENCH_STALL_WAITS, HUB_BENCH_STALL_SECONDS (0.5).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import statistics
import sys
from typing import Any

from bench import harness as h
from bench.run import Pipeline
from bench.scenarios import SCENARIOS

RUN_SECONDS = 40
STALLS_AT = (0.2, 0.4, 0.6)  # of the run


async def one(fetch_wait: int, rate: float, stall: float, run_seconds: float = RUN_SECONDS,
              infra: h.Infra | None = None) -> dict[str, Any]:
    base = SCENARIOS["tasks"]
    sc = dataclasses.replace(base, extra_env={**base.extra_env, "HUB_KAFKA__FETCH_MAX_WAIT_MS": str(fetch_wait)})
    infra = infra or h.find_infra()
    dbs = h.Databases(infra)
    name, dsns = await dbs.create([sc.service], f"stall{fetch_wait}")
    p = Pipeline(sc, infra, dsns[sc.service], h.with_database(infra.admin_dsn, name), h.ROOT / "var" / "bench")
    try:
        await p.start()
        await p.max_rate(1000, None)  # warm-up

        async def freeze() -> None:
            last = 0.0
            for share in STALLS_AT:
                await asyncio.sleep(share * run_seconds - last)
                last = share * run_seconds
                os.kill(p.proc.pid, signal.SIGSTOP)
                await asyncio.sleep(stall)
                os.kill(p.proc.pid, signal.SIGCONT)

        stalls = asyncio.create_task(freeze())
        res = await p.paced(rate, run_seconds)
        await stalls
        import asyncpg

        conn = await asyncpg.connect(p.admin_db_dsn)
        try:
            rows = await conn.fetch(f"SELECT extract(epoch FROM processed_at)::float8 AS t, count(*) AS n "
                                    f"FROM {sc.service}.inbox WHERE event_id = ANY($1::uuid[]) GROUP BY 1 ORDER BY 1",
                                    list(p.collector.sent_at))
        finally:
            await conn.close()
        end = rows[-1]["t"]
        tail = [r for r in rows if r["t"] >= end - run_seconds / 4]
        gaps = [b["t"] - a["t"] for a, b in zip(tail, tail[1:])] or [0.0]
        res.update(tail_batches=len(tail), tail_batch_p50=statistics.median(r["n"] for r in tail),
                   tail_batch_max=max(r["n"] for r in tail), tail_gap_p50_ms=statistics.median(gaps) * 1000,
                   tail_gap_max_ms=max(gaps) * 1000)
        return res
    finally:
        await p.stop()
        await dbs.drop_all()


async def amain() -> None:
    rate = float(os.environ.get("HUB_BENCH_STALL_RATE", 450))
    stall = float(os.environ.get("HUB_BENCH_STALL_SECONDS", 0.5))
    waits = [int(x) for x in os.environ.get("HUB_BENCH_STALL_WAITS", "500,50").split(",")]
    h.log(f"tasks at {rate:.0f}/s for {RUN_SECONDS} s, frozen {stall} s at {[x * RUN_SECONDS for x in STALLS_AT]} s; "
          f"fetch_max_wait_ms {waits}")
    rows = []
    for w in waits:
        r = await one(w, rate, stall)
        rows.append([str(w), f"{r['received']}/{r['sent']}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                     f"{r['consumed_p50_ms']:.0f}", str(r["tail_batches"]), f"{r['tail_batch_p50']:.0f}",
                     f"{r['tail_batch_max']}", f"{r['tail_gap_p50_ms']:.0f}", f"{r['tail_gap_max_ms']:.0f}"])
        h.log(f"fetch_max_wait_ms={w}: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")
    print(h.table(rows, ["fetch_max_wait_ms", "out/in", "p50 ms", "p99 ms", "p50 to service tx", "batches in last quarter",
                         "batch size p50", "batch size max", "gap p50 ms", "gap max ms"]))


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
