"""`make up`: the infrastructure plus every service as its own process, in the foreground.

Each service runs from its own console script (`hub-identity`, ...) with its
settings in environment variables, logs JSON lines to <state>/logs/<name>.log,
and is recorded in stack.json, so Ctrl-C here or `make down` elsewhere stops
everything by pid, services first.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from hub_platform.service import WEDGED_EXIT_CODE

from . import replicas, stack, zoho
from .settings import DevstackSettings

SERVICE_PORTS: dict[str, int] = {"identity": 8081, "linking": 8082, "tasks": 8083, "notifications": 8084, "sandbox": 8090}


def start_services(state_dir: Path, info: dict[str, Any], timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Start (or reuse) each service process and wait until its /readyz answers 200."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running = stack.status(state_dir)
    started: dict[str, dict[str, Any]] = {}
    ports = dict(SERVICE_PORTS)
    fake: dict[str, Any] = {}
    if DevstackSettings().zoho == "fake":  # the connectors stand where the sandbox stands
        del ports["sandbox"]
        ports.update(zoho.CONNECTOR_PORTS)
        fake = {"fake Zoho": zoho.start_fake(state_dir)}
    for name, port in ports.items():
        log_path = logs / f"{name}.log"
        if running.get(name, {}).get("running"):
            started[name] = {"pid": running[name]["pid"], "port": port, "log": str(log_path), "reused": True}
            continue
        started[name] = replicas.launch(state_dir, info, name, 1)
    for name, rec in started.items():  # they start side by side; each then gets the whole timeout
        replicas.wait_ready({"name": name, **rec}, timeout)
    return {**fake, **started}


def token_lines(state_dir: Path) -> list[str]:
    """Where the local stack keeps the tokens that guard linking's key minting and the notifications API."""
    return [f"Linking admin token: {stack.admin_token_hint(state_dir)}  (HUB_LINKING_ADMIN_TOKEN)",
            f"Operator token:      {stack.operator_token_hint(state_dir)}  (HUB_OPERATOR_TOKEN)"]


def summary_lines(info: dict[str, Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """The table `make up` prints: one row per server and service, columns aligned whatever the names."""
    kafka, pg, smtp = info["kafka"], info["postgres"], info["smtp"]
    rows: list[tuple[str, str, str]] = [
        ("Kafka bootstrap", kafka["bootstrap_servers"], f"log {kafka['log']}"),
        ("PostgreSQL", f"{pg['admin_dsn'].rsplit('/', 1)[0]}/{info['database']}", f"log {pg['log']}"),
        ("Mailbox (.eml)", smtp["maildir"], f"SMTP sink on {smtp['host']}:{smtp['port']}"),
    ]
    for name, rec in services.items():
        role = "sandbox CRM+PM" if name == "sandbox" else name if name == "fake Zoho" else f"{name} service"
        probes = "  (UI: /fake/..., limits: /fake/config)" if name == "fake Zoho" else "  (/readyz /metrics)"
        rows.append((role, f"http://127.0.0.1:{rec['port']}", f"log {rec['log']}{probes}"))
    first = max(len(r[0]) for r in rows)
    second = max(len(r[1]) for r in rows)
    return [f"  {a:<{first}}  {b:<{second}}  {c}" for a, b, c in rows]


def print_summary(info: dict[str, Any], services: dict[str, dict[str, Any]], elapsed: float, state_dir: Path) -> None:
    print(f"\nsynchub is up ({elapsed:.1f}s)\n")
    print("\n".join(summary_lines(info, services)))
    print("\n  Read API (Projects tab): http://127.0.0.1:8082/api/v1/openapi.json")
    for line in token_lines(state_dir):
        print(f"  {line}")
    print("  Ctrl-C stops everything; from another shell: make down\n", flush=True)


def crashed(returncode: int | None) -> bool:
    """A service that exited on its own with an error; one stopped by SIGTERM/SIGINT (`make down`, Ctrl-C) did not crash."""
    return returncode is not None and returncode not in (0, -signal.SIGTERM, -signal.SIGINT)


MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 600.0
"""A service that exits wedged is restarted at most MAX_RESTARTS times within RESTART_WINDOW_SECONDS; past that it is
reported like a crash and left down (a group client that wedges again and again needs a person, not a loop)."""


def restart_allowed(history: list[float], now: float) -> bool:
    """Count one more restart in `history` (monotonic times) if the window allows it."""
    history[:] = [t for t in history if now - t < RESTART_WINDOW_SECONDS]
    if len(history) >= MAX_RESTARTS:
        return False
    history.append(now)
    return True


def supervise_once(state_dir: Path, info: dict[str, Any], services: dict[str, dict[str, Any]],
                   restarts: dict[str, list[float]], now: float) -> None:
    """What `restartPolicy: Always` does in Kubernetes, for the one exit that asks for it: a service whose offset commit
    never returned exits with WEDGED_EXIT_CODE (its partitions have gone to nobody or to other replicas; the inbox
    absorbs the replayed batch) and is started again here. Any other exit is reported as a crash and left down."""
    for name, rec in list(services.items()):
        proc = rec.get("proc")
        if proc is None or rec.get("reported"):
            continue
        code = proc.poll()
        if code == WEDGED_EXIT_CODE and rec.get("service") and restart_allowed(restarts.setdefault(name, []), now):
            print(f"!! {name} exited wedged ({code}: its offset commit never returned); restarting it "
                  f"(restart {len(restarts[name])} of at most {MAX_RESTARTS} in {RESTART_WINDOW_SECONDS:.0f} s); "
                  f"see {rec['log']}", file=sys.stderr, flush=True)
            services[name] = replicas.launch(state_dir, info, rec["service"], rec.get("replica", 1))
        elif crashed(code):
            rec["reported"] = True
            print(f"!! {name} exited with {code}; see {rec['log']}", file=sys.stderr, flush=True)


def up(state_dir: Path) -> int:
    """Start everything, print where it is, wait in the foreground, stop everything on Ctrl-C/SIGTERM."""
    state_dir = state_dir.resolve()
    t0 = time.monotonic()
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        info = stack.start_infra(state_dir)
        services = start_services(state_dir, info)
    except Exception as exc:
        print(f"make up failed: {exc}", file=sys.stderr)
        stack.stop_all(state_dir)
        return 1
    print_summary(info, services, time.monotonic() - t0, state_dir)
    stopped_elsewhere = False
    all_gone_since: float | None = None
    restarts: dict[str, list[float]] = {}
    try:
        while not stopping:
            supervise_once(state_dir, info, services, restarts, time.monotonic())
            procs = [rec.get("proc") for rec in services.values() if rec.get("proc") is not None]
            if procs and all(p.poll() is not None for p in procs):
                # Every service is gone. `make down` from another shell forgets them in stack.json while it
                # stops everything: leave the rest to it (two stop_all at once race on stack.json). If they
                # are still recorded a while later, they crashed: stop the infrastructure here.
                recorded = set(stack.read_stack(state_dir).get("processes", {})) & set(services)
                if not recorded:
                    stopped_elsewhere = True
                    print("stopped from another shell (make down)", flush=True)
                    break
                all_gone_since = all_gone_since or time.monotonic()
                if time.monotonic() - all_gone_since > 5:
                    print("all services have exited", file=sys.stderr, flush=True)
                    break
            time.sleep(0.5)
    finally:
        if not stopped_elsewhere:
            print("stopping ...", flush=True)
            stopped = stack.stop_all(state_dir)
            print("stopped: " + ", ".join(stopped))
    return 0
