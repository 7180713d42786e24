"""The figures as tables; RESULTS.md keeps its written analysis and gets the latest figures between markers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.harness import fmt_rate, table

START, END = "<!-- figures:start (written by make bench) -->", "<!-- figures:end -->"


def _ms(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def runs(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every service run of the bench, the baseline tree's (named "<service> (old)") after the current tree's."""
    out = [(s["scenario"], s) for s in r["scenarios"]]
    return out + [(f"{s['scenario']} (old)", s) for s in (r.get("baseline") or {}).get("scenarios", [])]


FIGURES = (
    ("sustained max/s", lambda s: s["max"]["steady_rate"], "higher is better"),
    ("service CPU ms per event", lambda s: s["max"]["cpu_ms_per_event"], "lower is better"),
    ("p50 at 50% load (ms)", lambda s: s["at50"]["p50_ms"], "lower is better"),
    ("p99 at 80% load (ms)", lambda s: s["at80"]["p99_ms"], "lower is better"),
    ("peak RSS (MB)", lambda s: s["rss_peak_mb"], "lower is better"),
    ("p50 at the same rate (ms)", lambda s: s["same"]["p50_ms"], "lower is better"),
    ("p99 at the same rate (ms)", lambda s: s["same"]["p99_ms"], "lower is better"),
)
"""What `make bench BASE=<ref>` compares: (name, how to read it from a scenario's result, which way is better)."""


def ratios(new: dict[str, Any], old: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(figure, new, old, new ÷ old) for one scenario run with both trees; NaN where a figure is missing."""
    out = []
    for name, get, _ in FIGURES:
        try:
            a, b = float(get(new)), float(get(old))
        except (KeyError, TypeError):
            a = b = float("nan")
        out.append((name, a, b, a / b if b else float("nan")))
    return out


def comparison(r: dict[str, Any]) -> list[str]:
    b = r["baseline"]
    old = {s["scenario"]: s for s in b["scenarios"]}
    rows = []
    for s in r["scenarios"]:
        if s["scenario"] not in old:
            continue
        for (name, a, c, q), (_, _, better) in zip(ratios(s, old[s["scenario"]]), FIGURES):
            if "same rate" in name:
                if "same" not in s:
                    continue  # HUB_BENCH_SAME_RATE not given: no row rather than n/a
                name = name.replace("the same rate", f"{fmt_rate(s['same']['target_rate'])}/s, both")
            fmt = fmt_rate if name.startswith("sustained") else (lambda x: f"{x:.3f}") if "CPU" in name else _ms
            rows.append([s["scenario"], name, fmt(a), fmt(c), "n/a" if math.isnan(q) else f"{q:.2f}", better])
    return [f"**New ÷ old**: the current tree against the baseline {b['describe']}, every scenario run with both trees "
            "back to back in this run, on the same broker and database (each tree's latency runs at 50% and 80% of "
            "its own maximum; the rows \"at <rate>/s, both\" at one rate for both trees, HUB_BENCH_SAME_RATE).", "", table(rows, ["service", "figure", "new", "old", "new ÷ old", ""])]


def render(r: dict[str, Any]) -> str:
    m, v = r["machine"], r["versions"]
    out = [
        f"Taken {m['date']} with `{r['command']}` ({r['total_seconds']:.0f} s).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpus_usable']} usable), {m['memory']} RAM, {m['cpu']}; {m['os']}. "
        f"Load average (1/5/15 min) at start {m.get('load_average_start')}, at end {m.get('load_average_end')}.",
        f"Python {v['python']}, Kafka {v['kafka']} (aiokafka {v['aiokafka']}), PostgreSQL {v['postgresql']} "
        f"(fsync={v['pg_fsync']}, synchronous_commit={v['pg_synchronous_commit']}), asyncpg {v['asyncpg']}. "
        f"Servers: {r['infra']}. Everything (broker, database, services, bench) on the same machine.",
        f"Partitions on the broker before the run: {r.get('broker_partitions', 'n/a')} (each run deletes its own topics).",
    ]
    if r.get("settings"):
        out.append("Settings: " + ", ".join(f"{k}={val}" for k, val in sorted(r["settings"].items())))
    if r.get("baseline"):
        out += ["", *comparison(r)]
    k = r.get("kafka", {})
    out += ["", "**Baselines** (events or messages per second)", ""]
    rows = [["aiokafka produce, 500-byte messages, idempotent acks=all, linger 5 ms", fmt_rate(k.get("produce", 0))],
            ["aiokafka consume (getmany, 500 per poll)", fmt_rate(k.get("consume", 0))]]
    for s in r["scenarios"]:
        rows.append([f"{s['scenario']}: its per-event transaction, direct asyncpg, 1 connection, 1 tx per event",
                     fmt_rate(s["db_per_event"])])
        rows.append([f"{s['scenario']}: platform BatchProcessor without Kafka (parse + 1 tx per 500)",
                     fmt_rate(s["db_platform_batch"])])
    out.append(table(rows, ["baseline", "rate/s"]))
    out += ["", "**Pipeline** (ingest topic -> consume -> inbox + state + outbox in one tx -> relay -> output topic)", ""]
    rows = []
    for s in r["scenarios"]:
        top = s["max"]["steady_rate"]
        rows.append([s["scenario"], fmt_rate(top), f"{top / s['db_per_event']:.2f}", f"{top / s['db_platform_batch']:.2f}",
                     f"{top / k['produce']:.3f}" if k.get("produce") else "", f"{top / k['consume']:.3f}" if k.get("consume") else "",
                     f"{s['max']['events']:.0f}", f"{s['max'].get('cpu_ms_per_event', float('nan')):.3f}"])
    out.append(table(rows, ["service", "sustained max/s", "÷ db per-event", "÷ db platform batch", "÷ kafka produce",
                            "÷ kafka consume", "events", "service CPU ms/event"]))
    out += ["", "**Latency** ingest `occurred_at` -> output event read by the bench (ms)", ""]
    rows = []
    for name, s in runs(r):
        for label, key in (("10/s", "quiet"), ("50%", "at50"), ("80%", "at80"), ("same rate", "same")):
            x = s.get(key)
            if not x:
                continue
            rows.append([name, label, fmt_rate(x["target_rate"]), f"{x['received']}/{x['sent']}", _ms(x["p50_ms"]),
                         _ms(x["p95_ms"]), _ms(x["p99_ms"]), _ms(x["max_ms"]), _ms(x.get("consumed_p50_ms")),
                         _ms(x.get("consumed_p99_ms")), _ms(x.get("publish_p50_ms")), _ms(x.get("publish_p99_ms"))])
    out.append(table(rows, ["service", "load", "rate/s", "out/in", "p50", "p95", "p99", "max",
                            "p50 to service tx", "p99 to service tx", "p50 to relay send", "p99 to relay send"]))
    out += ["", "**Consumer lag** during the run at 80% (sampled every 2 s; lag = end offsets - committed offsets of the "
            "service's group on its ingest topics; backlog = produced - output read)", ""]
    rows = []
    for s in r["scenarios"]:
        x = s.get("at80") or {}
        if "lag_bounded" not in x:
            continue
        rows.append([s["scenario"], f"{x.get('seconds', 0)} s", str(x.get("lag_bounded")), _ms(x.get("lag_max")),
                     _ms(x.get("lag_mean")), _ms(x.get("lag_first_third_max")), _ms(x.get("lag_last_third_max")),
                     f"{x.get('lag_slope_per_s', 0):+.2f}", _ms(x.get("backlog_max"))])
    out.append(table(rows, ["service", "run", "bounded", "max lag", "mean lag", "max 1st third", "max last third",
                            "slope/s", "max backlog"]))
    out += ["", "**Memory and idle CPU** (resident set of each service process, sampled every 0.2 s; CPU over 5 s "
            "idle after start, % of one core)", ""]
    rows = [[name, f"{s['rss_idle_mb']:.0f}", f"{s['rss_peak_mb']:.0f}", f"{s['rss_end_mb']:.0f}",
             f"{s['idle_cpu_percent']:.1f}" if "idle_cpu_percent" in s else "n/a"] for name, s in runs(r)]
    out.append(table(rows, ["service", "after start (MB)", "peak (MB)", "at end (MB)", "idle CPU %"]))
    if r.get("missing"):
        out += ["", f"Not measured (scenario not available): {', '.join(r['missing'])}."]
    prof = [s for s in r["scenarios"] if s.get("profile_top")]
    for s in prof:
        out += ["", f"py-spy, {s['scenario']} during its maximum-rate run (share of samples, inclusive; {s['profile_file']}):", ""]
        out.append(table([[f, f"{share:.1%}"] for f, share in s["profile_top"]], ["function", "share"]))
    return "\n".join(out)


def write_results(path: Path, figures: str, results: dict[str, Any]) -> None:
    block = f"{START}\n{figures}\n{END}"
    if path.exists():
        text = path.read_text()
        if START in text and END in text:
            before, rest = text.split(START, 1)
            _, after = rest.split(END, 1)
            path.write_text(before + block + after)
            return
        path.write_text(text.rstrip() + "\n\n## Latest figures\n\n" + block + "\n")
        return
    path.write_text(f"# Benchmark results\n\n## Latest figures\n\n{block}\n")
