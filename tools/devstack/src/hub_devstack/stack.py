"""The local stack: Kafka + PostgreSQL + SMTP sink under one state folder (default var/local).

``start_infra(state_dir)`` starts (or reuses) the three servers, provisions the ``synchub``
database with one role + schema per service, and records everything in ``<state_dir>/stack.json``;
``stop_all(state_dir)`` stops every process recorded there, newest first, by pid.

Other launchers (e.g. the services for ``make up``) record their own processes with
``record_process(state_dir, name, pid, ...)`` so that ``stop_all`` stops them too (before the
infrastructure, since they were started after it).

State folder layout::

    stack.json            what runs where (see ``start_infra``)
    kafka/                KafkaServer workdir (server.properties, data/, logs/server.log, kafka.out,
                          credentials.json: the SCRAM password of every principal, mode 0600)
    postgres/             PGDATA (kept across restarts); postgres.log, postgres.pid beside it
    mailbox/              .eml files received by the SMTP sink
    secrets/              admin-token, operator-token (mode 600): generated once, kept across restarts
    smtp.log, smtp.pid    the SMTP sink process
"""

from __future__ import annotations

import os
import secrets
import signal
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from . import _proc
from ._proc import ServerStartError
from .kafka import ADMIN_USER, KafkaAccess, KafkaCluster, KafkaServer, ensure_jars, new_password
from .postgres import PostgresServer
from .provision import provision_service
from .settings import SERVICES, DevstackSettings

STACK_FILE = "stack.json"
_lock = threading.RLock()


def default_state_dir() -> Path:
    """$HUB_STATE_DIR, else var/local under the current directory."""
    return Path(os.environ.get("HUB_STATE_DIR", "var/local"))


def stack_file(state_dir: Path | str) -> Path:
    return Path(state_dir).resolve() / STACK_FILE


def read_stack(state_dir: Path | str) -> dict[str, Any]:
    """Contents of stack.json ({} if there is none)."""
    return _proc.read_json(stack_file(state_dir)) or {}


def update_stack(state_dir: Path | str, **sections: Any) -> dict[str, Any]:
    """Merge top-level sections into stack.json (thread-safe within a process)."""
    with _lock:
        data = read_stack(state_dir)
        data.setdefault("processes", {})
        data.update(sections)
        data["state_dir"] = str(Path(state_dir).resolve())
        data["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _proc.write_json(stack_file(state_dir), data)
        return data


def record_process(
    state_dir: Path | str,
    name: str,
    pid: int,
    *,
    log: str | Path | None = None,
    stop_signal: str = "SIGTERM",
    stop_timeout: float = 30.0,
    **extra: Any,
) -> None:
    """Record a process in stack.json so ``stop_all`` stops it (newest first): ``stop_signal``,
    wait ``stop_timeout`` seconds, then SIGKILL. Re-recording a name moves it to the end."""
    with _lock:
        data = read_stack(state_dir)
        processes: dict[str, Any] = data.get("processes", {})
        processes.pop(name, None)
        processes[name] = {
            "pid": pid,
            "create_time": _proc.process_create_time(pid),
            "log": str(log) if log is not None else None,
            "stop_signal": stop_signal,
            "stop_timeout": stop_timeout,
            **extra,
        }
        update_stack(state_dir, processes=processes)


def forget_process(state_dir: Path | str, name: str) -> None:
    with _lock:
        data = read_stack(state_dir)
        processes = data.get("processes", {})
        if processes.pop(name, None) is not None:
            update_stack(state_dir, processes=processes)


# -- tokens ---------------------------------------------------------------------------------------

ADMIN_TOKEN_FILE = "secrets/admin-token"
OPERATOR_TOKEN_FILE = "secrets/operator-token"


def admin_token_hint(state_dir: Path | str | None = None) -> Path:
    """Where `make up` keeps the linking admin token (HUB_LINKING_ADMIN_TOKEN): read it from this file."""
    return Path(state_dir if state_dir is not None else default_state_dir()).resolve() / ADMIN_TOKEN_FILE


def operator_token_hint(state_dir: Path | str | None = None) -> Path:
    """Where `make up` keeps the operator token (HUB_OPERATOR_TOKEN) of the notifications API."""
    return Path(state_dir if state_dir is not None else default_state_dir()).resolve() / OPERATOR_TOKEN_FILE


def ensure_token(path: Path) -> str:
    """The token in `path`, generated (32 random bytes, URL-safe) and written owner-only if missing."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def ensure_tokens(state_dir: Path | str) -> dict[str, str]:
    """HUB_LINKING_ADMIN_TOKEN and HUB_OPERATOR_TOKEN of the local stack, from their files (made if missing)."""
    return {"HUB_LINKING_ADMIN_TOKEN": ensure_token(admin_token_hint(state_dir)),
            "HUB_OPERATOR_TOKEN": ensure_token(operator_token_hint(state_dir))}


# -- SMTP sink as a process ----------------------------------------------------------------------


def _smtp_ready(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
            return smtp.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


def start_smtp_process(state_dir: Path, port: int, timeout: float = 30.0) -> dict[str, Any]:
    """Start ``python -m hub_devstack.smtp_sink`` (or reuse the one recorded) and wait until it
    answers NOOP. Returns its stack.json section."""
    maildir = state_dir / "mailbox"
    log = state_dir / "smtp.log"
    pid_file = state_dir / "smtp.pid"
    previous = read_stack(state_dir).get("smtp") or {}
    if _proc.pid_alive(previous.get("pid"), previous.get("create_time")) and _smtp_ready(previous["port"]):
        return previous
    _proc.ensure_port_free("127.0.0.1", port, "smtp sink")
    maildir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "hub_devstack.smtp_sink", "--maildir", str(maildir), "--port", str(port)]
    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(f"{popen.pid}\n")
    deadline = time.monotonic() + timeout
    while not _smtp_ready(port):
        if popen.poll() is not None:
            raise ServerStartError(f"smtp sink exited with {popen.returncode}:\n{_proc.tail(log)}")
        if time.monotonic() >= deadline:
            _proc.stop_pid(popen.pid, popen=popen, signals=((signal.SIGTERM, 5.0),))
            raise ServerStartError(f"smtp sink not ready after {timeout:.0f}s:\n{_proc.tail(log)}")
        time.sleep(0.1)
    return {
        "host": "127.0.0.1",
        "port": port,
        "maildir": str(maildir),
        "pid": popen.pid,
        "create_time": _proc.process_create_time(popen.pid),
        "log": str(log),
    }


# -- whole stack ---------------------------------------------------------------------------------


def kafka_principals() -> list[str]:
    """Every SCRAM user of a secured local broker: the admin and each principal of the ACL model."""
    from hub_platform.kafka_acls import PRINCIPALS

    return [ADMIN_USER, *PRINCIPALS]


def sasl_users(workdir: Path, security: str) -> dict[str, str] | None:
    """The principals' passwords: those the broker in `workdir` was formatted with, else new ones."""
    if security == "PLAINTEXT":
        return None
    known = (_proc.read_json(workdir / "credentials.json") or {}).get("users")
    return known or {user: new_password() for user in kafka_principals()}


def _start_kafka(state_dir: Path, cfg: DevstackSettings) -> KafkaServer | KafkaCluster:
    workdir = state_dir / "kafka"
    server: KafkaServer | KafkaCluster | None
    if cfg.kafka_brokers > 1:
        server = KafkaCluster.attach(workdir)
        if server is None:
            ports = [cfg.kafka_port + 2 * i for i in range(cfg.kafka_brokers)]
            server = KafkaCluster(workdir, ports, heap=cfg.kafka_heap, jvm_opts=cfg.kafka_jvm_opts.split(),
                                  sasl_users=sasl_users(workdir / "node1", cfg.kafka_security))
            server.start(timeout=cfg.start_timeout)
        else:
            server.wait_ready(cfg.start_timeout)
    else:
        server = KafkaServer.attach(workdir)
        if server is None:
            server = KafkaServer(
                workdir,
                port=cfg.kafka_port,
                controller_port=cfg.kafka_controller_port,
                heap=cfg.kafka_heap,
                jvm_opts=cfg.kafka_jvm_opts.split(),
                sasl_users=sasl_users(workdir, cfg.kafka_security),
            )
            server.start(timeout=cfg.start_timeout)
        else:
            server.wait_ready(cfg.start_timeout)
    final = server
    _proc.run_coro_sync(lambda: final.access().secure())  # as the admin: topics and ACLs (when secured)
    update_stack(state_dir, kafka=server.describe())
    nodes = server.nodes if isinstance(server, KafkaCluster) else [server]
    for node in nodes:
        name = "kafka" if len(nodes) == 1 else f"kafka-{node.node_id}"
        record_process(state_dir, name, node.pid or 0, log=node.log_file, stop_signal="SIGTERM", stop_timeout=30)
    return server


def kafka_env(info: dict[str, Any], principal: str) -> dict[str, str]:
    """HUB_KAFKA__* variables for a service of the stack recorded in `info` (stack.json) acting as `principal`.
    The passwords stay in the Kafka workdir's credentials.json, not in stack.json."""
    return kafka_access(info).service_env(principal)


def kafka_access(info: dict[str, Any]) -> KafkaAccess:
    """The stack's broker and its principals' credentials (from stack.json's contents)."""
    workdir = info["kafka"]["workdir"]
    server = KafkaCluster.attach(workdir) if info["kafka"].get("brokers", 1) > 1 else KafkaServer.attach(workdir)
    if server is None:
        raise RuntimeError(f"the stack's Kafka in {info['kafka']['workdir']} is not running")
    return server.access()


def _start_postgres(state_dir: Path, cfg: DevstackSettings) -> PostgresServer:
    datadir = state_dir / "postgres"
    server = PostgresServer.attach(datadir)
    if server is None:
        server = PostgresServer(datadir, port=cfg.pg_port, fsync=cfg.pg_fsync)
        server.start(timeout=cfg.start_timeout)
    else:
        server.wait_ready(cfg.start_timeout)
    update_stack(state_dir, postgres=server.describe())
    # SIGINT = PostgreSQL's "fast" shutdown (SIGTERM would wait for clients to disconnect)
    record_process(state_dir, "postgres", server.pid or 0, log=server.log_file, stop_signal="SIGINT", stop_timeout=30)
    return server


def start_infra(state_dir: Path | str | None = None, settings: DevstackSettings | None = None) -> dict[str, Any]:
    """Start (or reuse) Kafka, PostgreSQL and the SMTP sink; provision the database and one role +
    schema per service (password = role name); write and return stack.json's contents::

        {"state_dir", "kafka": {"bootstrap_servers", "port", "pid", "log", "stdout", ...},
         "postgres": {"admin_dsn", "port", "pid", "log", "datadir", ...},
         "smtp": {"host", "port", "maildir", "pid", "log"},
         "database": "synchub", "services": {"identity": {"dsn", "schema", "env": {...}}, ...},
         "processes": {"postgres": {...}, "smtp": {...}, "kafka": {...}}}
    """
    cfg = settings or DevstackSettings()
    state = Path(state_dir if state_dir is not None else default_state_dir()).resolve()
    state.mkdir(parents=True, exist_ok=True)
    update_stack(state)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-devstack-kafka") as pool:
        # the JVM boots while PostgreSQL and the SMTP sink start here
        kafka_future = pool.submit(lambda: (ensure_jars(), _start_kafka(state, cfg))[1])
        pg = _start_postgres(state, cfg)
        smtp = start_smtp_process(state, cfg.smtp_port)
        update_stack(state, smtp=smtp)
        record_process(state, "smtp", smtp["pid"], log=smtp["log"], stop_signal="SIGTERM", stop_timeout=10)

        async def provision_all() -> dict[str, str]:
            return {s: await provision_service(pg.admin_dsn, cfg.database, s, s) for s in SERVICES}

        dsns = _proc.run_coro_sync(provision_all)
        kafka = kafka_future.result()

    ensure_tokens(state)  # generated here, given to the services by `service_tokens` (not kept in stack.json)
    services = {
        name: {
            "dsn": dsn,
            "schema": name,
            "env": {
                "HUB_SERVICE_NAME": name,
                "HUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "HUB_DB__URL": dsn,
                "HUB_SMTP__HOST": smtp["host"],
                "HUB_SMTP__PORT": str(smtp["port"]),
            },
        }
        for name, dsn in dsns.items()
    }
    if cfg.zoho == "fake":  # the connectors and their fake Zoho (hub_devstack.zoho)
        from . import zoho

        services.update(zoho.services(state, _proc.run_coro_sync(lambda: zoho.provision(pg.admin_dsn, cfg.database)),
                                      kafka.bootstrap_servers))
    info = update_stack(state, database=cfg.database, services=services)
    if cfg.zoho == "fake":
        zoho.write_env_files(state, info, {name: kafka_env(info, name) for name in zoho.CONNECTOR_PORTS})
    return info


def _stop_record(name: str, rec: dict[str, Any]) -> bool:
    pid = rec.get("pid")
    if not pid:
        return False
    if not _proc.pid_alive(pid, rec.get("create_time")):
        _proc.stop_pid(pid, create_time=rec.get("create_time"))  # only reaps, if it is a zombie child of ours
        return False
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    sig = getattr(signal, str(rec.get("stop_signal", "SIGTERM")), signal.SIGTERM)
    stopped = _proc.stop_pid(
        pid, create_time=rec.get("create_time"), signals=((sig, float(rec.get("stop_timeout", 30))),)
    )
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return stopped


def stop_all(state_dir: Path | str | None = None) -> list[str]:
    """Stop every process recorded in stack.json, newest first (by pid, checking its start time so
    a recycled pid is never signalled). Returns the names of those that were running."""
    state = Path(state_dir if state_dir is not None else default_state_dir()).resolve()
    data = read_stack(state)
    processes: dict[str, Any] = data.get("processes", {})
    stopped = []
    for name in reversed(list(processes)):
        if _stop_record(name, processes[name]):
            stopped.append(name)
        forget_process(state, name)
    for pid_file in (state / "smtp.pid", state / "postgres.pid", state / "kafka" / "kafka.pid"):
        pid_file.unlink(missing_ok=True)
    return stopped


def status(state_dir: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """name -> {"pid", "running", "log"} for each recorded process."""
    state = Path(state_dir if state_dir is not None else default_state_dir()).resolve()
    out = {}
    for name, rec in read_stack(state).get("processes", {}).items():
        pid = rec.get("pid")
        running = _proc.pid_alive(pid, rec.get("create_time"))
        out[name] = {
            "pid": pid,
            "running": running,
            "rss_mb": round(_proc.rss_bytes(pid, include_children=True) / 2**20, 1) if running else 0.0,
            "log": rec.get("log"),
        }
    return out
