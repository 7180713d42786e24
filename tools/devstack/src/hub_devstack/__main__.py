"""``python -m hub_devstack up|down|status``, ``scale <service> <n>``, ``handover <service>``, ``infra up|down|status [--state-dir var/local]``, ``fetch-kafka``.

Ports come from HUB_LOCAL_KAFKA_PORT (9092), HUB_LOCAL_PG_PORT (5432), HUB_LOCAL_SMTP_PORT (1025);
see hub_devstack.settings.DevstackSettings for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from . import stack
from ._proc import ServerStartError


def _infra_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    print(f"starting Kafka, PostgreSQL and the SMTP sink in {args.state_dir.resolve()} ...", flush=True)
    try:
        info = stack.start_infra(args.state_dir)
    except (ServerStartError, RuntimeError) as exc:
        print(f"infra up failed: {exc}", file=sys.stderr)
        print("(what did start is recorded in stack.json; `infra down` stops it)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"ready in {time.monotonic() - t0:.1f}s")
    kafka, pg = info["kafka"], info["postgres"]
    print(f"  kafka      {kafka['bootstrap_servers']:<40} pid {kafka['pid']}  log {kafka['log']}")
    print(f"  postgres   {pg['admin_dsn']:<40} pid {pg['pid']}  log {pg['log']}")
    smtp = info["smtp"]
    print(f"  smtp sink  {smtp['host'] + ':' + str(smtp['port']):<40} pid {smtp['pid']}  mail {smtp['maildir']}")
    for name, svc in info["services"].items():
        print(f"  db {name:<14} {svc['dsn']}")
    print(f"  state      {stack.stack_file(args.state_dir)}")
    return 0


def _infra_down(args: argparse.Namespace) -> int:
    stopped = stack.stop_all(args.state_dir)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _infra_status(args: argparse.Namespace) -> int:
    st = stack.status(args.state_dir)
    if args.json:
        print(json.dumps(st, indent=2))
    elif not st:
        print(f"nothing recorded in {stack.stack_file(args.state_dir)}")
    for name, rec in st.items():
        state = "running" if rec["running"] else "stopped"
        print(f"  {name:<14} {state:<8} pid {rec['pid']!s:<8} rss {rec['rss_mb']:>7.1f} MB  log {rec['log']}")
    if st.get("kafka", {}).get("running") and not args.json:
        from .replicas import group_report, print_groups

        print_groups(asyncio.run(group_report(args.state_dir)))
    return 0 if st and all(r["running"] for r in st.values()) else 1


def _scale(args: argparse.Namespace) -> int:
    from .replicas import scale

    try:
        result = asyncio.run(scale(args.state_dir.resolve(), args.service, args.replicas))
    except (ValueError, RuntimeError, TimeoutError) as exc:
        print(f"scale failed: {exc}", file=sys.stderr)
        return 1
    return 1 if result["owned_twice"] else 0


def _handover(args: argparse.Namespace) -> int:
    from .replicas import handover

    asyncio.run(handover(args.state_dir.resolve(), args.service))
    return 0


def _fetch_kafka(args: argparse.Namespace) -> int:
    from .kafka import ensure_jars, kafka_version

    t0 = time.monotonic()
    print(f"Kafka {kafka_version()} jars: ", end="", flush=True)
    jars = ensure_jars(args.cache_dir)
    print(f"{jars} ({time.monotonic() - t0:.1f}s)")
    return 0


def _up(args: argparse.Namespace) -> int:
    from .services import up

    return up(args.state_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub_devstack", description="Local development stack.")
    groups = parser.add_subparsers(dest="group", required=True)
    fetch = groups.add_parser("fetch-kafka", help="download the Kafka jars into the cache (Maven; once)")
    fetch.add_argument("--cache-dir", type=Path, default=None, help="default: ${HUB_CACHE_DIR:-~/.cache/synchub}")
    fetch.set_defaults(func=_fetch_kafka)
    for name, func, help_ in (
        ("up", _up, "infrastructure + every service in the foreground; Ctrl-C stops all"),
        ("down", _infra_down, "stop everything `up` or `infra up` started"),
        ("status", _infra_status, "show what is running (exit 1 unless all is)"),
    ):
        p = groups.add_parser(name, help=help_)
        p.add_argument("--state-dir", type=Path, default=stack.default_state_dir(), help="default: var/local")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
    scale = groups.add_parser("scale", help="run N replicas of a service on the running stack (one consumer group)")
    scale.add_argument("service", choices=("identity", "linking", "tasks", "notifications"))
    scale.add_argument("replicas", type=int)
    scale.add_argument("--state-dir", type=Path, default=stack.default_state_dir(), help="default: var/local")
    scale.set_defaults(func=_scale)
    handover = groups.add_parser("handover", help="measure partition handover: scale-up, graceful stop, SIGKILL of one replica")
    handover.add_argument("service", choices=("identity", "linking", "tasks", "notifications"))
    handover.add_argument("--state-dir", type=Path, default=stack.default_state_dir(), help="default: var/local")
    handover.set_defaults(func=_handover)
    infra = groups.add_parser("infra", help="Kafka, PostgreSQL and the SMTP sink")
    actions = infra.add_subparsers(dest="action", required=True)
    for name, func, help_ in (
        ("up", _infra_up, "start (or reuse) the servers and provision the database"),
        ("down", _infra_down, "stop everything recorded in stack.json"),
        ("status", _infra_status, "show what is running (exit 1 unless all is)"),
    ):
        p = actions.add_parser(name, help=help_)
        p.add_argument("--state-dir", type=Path, default=stack.default_state_dir(), help="default: var/local")
        if name != "down":
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
