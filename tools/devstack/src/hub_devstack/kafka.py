"""A real Apache Kafka broker (single node, KRaft, broker+controller in one JVM) for local use and tests.

The jars come from Maven Central through deploy/local/kafka/pom.xml (``ensure_jars``); the broker
configuration is deploy/local/kafka/server.properties.template and its logging
deploy/local/kafka/log4j2.yaml.

Workdir layout (``KafkaServer(workdir)``)::

    server.properties   rendered from the template
    data/               log.dirs (formatted once; meta.properties marks it)
    logs/server.log     broker log (INFO)
    kafka.out           JVM stdout/stderr (WARN and above, crashes)
    kafka.pid           pid of the JVM
    kafka.json          pid, create time, ports: what ``KafkaServer.attach`` reads
    credentials.json    SASL/SCRAM principals and passwords (mode 0600; secured servers only)

Secured (``sasl_users`` given): the client listener is SASL_PLAINTEXT with SCRAM-SHA-512, every
user's credentials are written into the metadata log at format time (``StorageTool format
--add-scram``), the ``StandardAuthorizer`` denies whatever no ACL allows, and ``admin`` is the
super user (inter-broker traffic, topic creation, the ACLs themselves). The controller listener is
SASL_PLAINTEXT too, with PLAIN and the admin's password in server.properties (a PLAINTEXT one would
have to make ANONYMOUS a super user; SCRAM cannot work there before a cluster's quorum has formed).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _proc
from ._proc import ServerStartError
from .paths import cache_dir as default_cache_dir
from .paths import deploy_dir

JARS_MARKER = ".complete"
_HOST = "127.0.0.1"
SASL_MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = "admin"


def kafka_dir() -> Path:
    """deploy/local/kafka (pom.xml, log4j2.yaml, server.properties.template)."""
    return deploy_dir() / "kafka"


def kafka_version(pom: Path | None = None) -> str:
    """The Kafka version pinned in pom.xml (<kafka.version>)."""
    text = (pom or kafka_dir() / "pom.xml").read_text()
    m = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if not m:
        raise ValueError("pom.xml has no <kafka.version> property")
    return m.group(1)


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def ensure_jars(cache_dir: Path | None = None, *, quiet: bool = True) -> Path:
    """Folder with the broker's jars, fetched with Maven on first use.

    Default location: ``${HUB_CACHE_DIR:-~/.cache/synchub}/kafka-<version>/jars``. Maven runs with
    its own local repository (``<cache>/m2``) and only when the folder is missing or was made from
    another pom.xml (a marker file records a finished fetch). Safe to call from several processes.
    """
    pom = kafka_dir() / "pom.xml"
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = base.expanduser().resolve()
    version = kafka_version(pom)
    jars = base / f"kafka-{version}" / "jars"
    marker = jars / JARS_MARKER
    digest = _pom_digest(pom)
    if marker.is_file() and marker.read_text().strip() == digest:
        return jars

    base.mkdir(parents=True, exist_ok=True)
    with (base / f"kafka-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same jars
        if marker.is_file() and marker.read_text().strip() == digest:
            return jars
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (mvn) is needed to fetch the Kafka jars; install it (apt-get install maven)")
        staging = jars.with_name(f"jars.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            *(["-q"] if quiet else []),
            "-B",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={base / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if proc.returncode != 0 or not any(staging.glob("kafka_*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"fetching the Kafka jars failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        shutil.rmtree(jars, ignore_errors=True)
        os.replace(staging, jars)
        (jars / JARS_MARKER).write_text(digest + "\n")
    return jars


def min_insync_replicas(replication: int) -> int:
    """2 with three replicas or more (one node may be down, an acknowledged write is on two), else 1."""
    return 2 if replication >= 3 else 1


def new_password() -> str:
    return secrets.token_urlsafe(18)


def _scram_option(user: str, password: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", user) or not re.fullmatch(r"[A-Za-z0-9_-]+", password):
        raise ValueError(f"SCRAM user/password must be plain tokens (user {user!r})")  # StorageTool's [k=v,...] syntax
    return f"{SASL_MECHANISM}=[name={user},password={password}]"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (22 characters)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like a command-line option
            return cid


@dataclass
class KafkaAccess:
    """How to reach a broker: its address and, when secured, every principal's SCRAM password."""

    bootstrap: str
    sasl_users: dict[str, str] | None = None

    @property
    def secured(self) -> bool:
        return self.sasl_users is not None

    def env(self, principal: str = ADMIN_USER) -> dict[str, str]:
        """HUB_KAFKA__* variables to connect as `principal` (ignored on a PLAINTEXT broker)."""
        env = {"HUB_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
               "HUB_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT" if self.secured else "PLAINTEXT"}
        if self.sasl_users is not None:
            env.update(HUB_KAFKA__SASL_MECHANISM=SASL_MECHANISM, HUB_KAFKA__SASL_USERNAME=principal,
                       HUB_KAFKA__SASL_PASSWORD=self.sasl_users[principal])
        return env

    def service_env(self, principal: str) -> dict[str, str]:
        """`env` for a hub service: on a secured broker the admin creates the topics (a service may not)."""
        return {**self.env(principal), **({"HUB_KAFKA__CREATE_TOPICS": "false"} if self.secured else {})}

    def settings(self, principal: str = ADMIN_USER, prefix: str = "", **overrides: Any) -> Any:
        """hub_platform KafkaSettings connecting as `principal` to the topics under `prefix`."""
        from hub_platform.settings import KafkaSettings

        fields = {k.removeprefix("HUB_KAFKA__").lower(): v for k, v in self.env(principal).items()}
        return KafkaSettings(**{**fields, "topic_prefix": prefix, **overrides})

    def client_options(self, principal: str = ADMIN_USER) -> dict[str, Any]:
        """aiokafka keyword arguments (bootstrap_servers included) to connect as `principal`."""
        return self.settings(principal).client_options()  # type: ignore[no-any-return]

    async def secure(self, prefix: str = "") -> None:
        """As the admin: the catalog's topics under `prefix` and the ACLs the catalog gives each principal on
        them (a no-op on a PLAINTEXT broker, where services create their topics themselves)."""
        if not self.secured:
            return
        from hub_platform.kafka_acls import bindings
        from hub_platform.kafka_admin import apply_acls, ensure_topics

        admin = self.settings(ADMIN_USER, prefix)
        await ensure_topics(admin)
        await apply_acls(admin, bindings(prefix))

    async def unsecure(self, prefix: str) -> None:
        """Remove the prefix's topics and their ACLs (group and cluster rules serve every prefix: kept)."""
        from hub_platform.kafka_acls import bindings
        from hub_platform.kafka_admin import delete_acls, delete_prefixed_topics

        admin = self.settings(ADMIN_USER, prefix)
        await delete_prefixed_topics(admin, prefix)
        if self.secured:
            await delete_acls(admin, [b for b in bindings(prefix) if b.resource_type == "TOPIC"])


class KafkaServer:
    """One local Kafka node. ``start()`` returns the bootstrap servers ("127.0.0.1:<port>")."""

    def __init__(
        self,
        workdir: Path | str,
        port: int = 9092,
        controller_port: int | None = None,
        heap: str = "256m",
        *,
        jars_dir: Path | None = None,
        java: str = "java",
        jvm_opts: Sequence[str] = (),
        sasl_users: Mapping[str, str] | None = None,
        node_id: int = 1,
        quorum_voters: str | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
    ) -> None:
        """`sasl_users` (user -> password, ``admin`` among them) makes a secured broker; None: PLAINTEXT.
        A node of a cluster (`KafkaCluster`) has its `node_id`, the static `quorum_voters`
        ("1@127.0.0.1:<port>,2@..."), the cluster's id and its `replication` factor."""
        self.node_id = node_id
        self.quorum_voters = quorum_voters
        self.cluster_id = cluster_id
        self.replication = replication
        if sasl_users is not None and ADMIN_USER not in sasl_users:
            raise ValueError(f"a secured broker needs the {ADMIN_USER!r} user")
        self.sasl_users = dict(sasl_users) if sasl_users is not None else None
        self.workdir = Path(workdir).resolve()
        self.port = int(port)
        self.controller_port = int(controller_port) if controller_port is not None else self.port + 1
        self.heap = heap
        self.jars_dir = jars_dir
        self.java = java
        self.jvm_opts = list(jvm_opts)
        self.pid: int | None = None
        self._create_time: float | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    @property
    def out_file(self) -> Path:
        return self.workdir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "kafka.pid"

    @property
    def state_file(self) -> Path:
        return self.workdir / "kafka.json"

    @property
    def properties_file(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def credentials_file(self) -> Path:
        return self.workdir / "credentials.json"

    @property
    def security_protocol(self) -> str:
        return "SASL_PLAINTEXT" if self.sasl_users is not None else "PLAINTEXT"

    def access(self) -> KafkaAccess:
        return KafkaAccess(self.bootstrap_servers, self.sasl_users)

    def client_options(self, user: str = ADMIN_USER) -> dict[str, Any]:
        """aiokafka keyword arguments to connect as `user` (ignored on a PLAINTEXT broker)."""
        return self.access().client_options(user)

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def attach(cls, workdir: Path | str) -> KafkaServer | None:
        """The server recorded in ``workdir`` if its process is still alive, else None."""
        workdir = Path(workdir).resolve()
        state = _proc.read_json(workdir / "kafka.json")
        if not state:
            return None
        users = None
        if state.get("security_protocol", "PLAINTEXT") != "PLAINTEXT":
            users = (_proc.read_json(workdir / "credentials.json") or {}).get("users")
        server = cls(
            workdir,
            port=state["port"],
            controller_port=state["controller_port"],
            heap=state.get("heap", "256m"),
            jvm_opts=state.get("jvm_opts", ()),
            sasl_users=users,
            node_id=state.get("node_id", 1),
            quorum_voters=state.get("quorum_voters"),
            cluster_id=state.get("cluster_id"),
            replication=state.get("replication", 1),
        )
        server.pid = state.get("pid")
        server._create_time = state.get("create_time")
        return server if server.is_running() else None

    def is_running(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            return False
        return _proc.pid_alive(self.pid, self._create_time)

    def _java_base(self, heap: str) -> list[str]:
        return [
            self.java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:TieredStopAtLevel=1",
            "-XX:ReservedCodeCacheSize=64m",
            "-XX:MaxMetaspaceSize=128m",
            "-Xss512k",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            f"-Dlog4j2.configurationFile={kafka_dir() / 'log4j2.yaml'}",
            *self.jvm_opts,  # last, so they override the defaults above (e.g. -XX:TieredStopAtLevel=4)
        ]

    def _render_properties(self) -> None:
        template = string.Template((kafka_dir() / "server.properties.template").read_text())
        text = template.substitute(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=str(self.data_dir),
            offsets_partitions=10,
            node_id=self.node_id,
            quorum=(f"controller.quorum.voters={self.quorum_voters}" if self.quorum_voters
                    else f"controller.quorum.bootstrap.servers={_HOST}:{self.controller_port}"),
            replication=self.replication,
            min_isr=min_insync_replicas(self.replication),
            listener=self.security_protocol,
            security=self._security_properties(),
        )
        self.properties_file.write_text(text)

    def _security_properties(self) -> str:
        if self.sasl_users is None:
            return ""
        admin = self.sasl_users[ADMIN_USER]
        lower = SASL_MECHANISM.lower()
        return "\n".join([
            f"sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
            f"listener.name.sasl_plaintext.{lower}.sasl.jaas.config="
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN_USER}" password="{admin}";',
            # The controllers authenticate each other with PLAIN and a password in this file: SCRAM credentials
            # live in the metadata log, which a cluster's voters cannot read before they have elected a leader.
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
            f'required username="{ADMIN_USER}" password="{admin}" user_{ADMIN_USER}="{admin}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found=false",
        ])

    def _write_credentials(self) -> None:
        if self.sasl_users is None:
            return
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"mechanism": SASL_MECHANISM, "users": self.sasl_users}, f, indent=2)

    def _format_storage(self, classpath: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            known = (_proc.read_json(self.credentials_file) or {}).get("users")
            if self.sasl_users is not None and known != self.sasl_users:
                raise ServerStartError(
                    f"{self.data_dir} was formatted with other (or no) SCRAM users than this secured broker's; "
                    f"remove {self.workdir} to start afresh")
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._java_base("128m"),
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            *([] if self.quorum_voters else ["--standalone"]),  # static voters: nothing more to say
            "-t",
            self.cluster_id or new_cluster_id(),
            "-c",
            str(self.properties_file),
        ]
        for user, password in (self.sasl_users or {}).items():
            cmd += ["--add-scram", _scram_option(user, password)]
        proc = subprocess.run(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
        )
        if proc.returncode != 0:
            raise ServerStartError(f"kafka storage format failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")

    def start(self, timeout: float = 120.0) -> str:
        """Start the broker (format its storage the first time) and wait until it answers metadata
        requests. Returns the bootstrap servers. A no-op when it is already running."""
        existing = self if self.is_running() else self.attach(self.workdir)
        if existing is not None:
            if existing.port != self.port:
                raise ServerStartError(f"{self.workdir} is already served on port {existing.port}, not {self.port}")
            self.pid, self._create_time = existing.pid, existing._create_time
            self.wait_ready(timeout)
            return self.bootstrap_servers
        _proc.ensure_port_free(_HOST, self.port, "kafka")
        _proc.ensure_port_free(_HOST, self.controller_port, "kafka controller")
        jars = self.jars_dir or ensure_jars()  # first time only: a Maven download (not in `timeout`)
        deadline = time.monotonic() + timeout
        classpath = f"{jars}/*"
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self._render_properties()
        self._format_storage(classpath)
        self._write_credentials()

        cmd = [*self._java_base(self.heap), "-cp", classpath, "kafka.Kafka", str(self.properties_file)]
        _proc.launch(self, cmd, cwd=self.workdir, output=self.out_file, deadline=deadline)
        return self.bootstrap_servers

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll until the broker lists itself in a metadata response (connecting, not sleeping)."""
        _proc.wait_until_ready(
            "kafka", is_running=self.is_running, host=_HOST, port=self.port, timeout=timeout,
            probe=lambda: _proc.run_coro_sync(lambda: probe(**self.client_options())),
            log_tail=lambda: f"(see {self.out_file} and {self.log_file})\n{_proc.tail(self.out_file)}\n{_proc.tail(self.log_file, 20)}",
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), wait up to `timeout`, then SIGKILL."""
        if self.pid is not None:
            _proc.stop_pid(
                self.pid, create_time=self._create_time, signals=((signal.SIGTERM, timeout),), popen=self._popen
            )
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the JVM at once (simulates a crash; the data stays)."""
        if self.pid is not None:
            _proc.stop_pid(self.pid, create_time=self._create_time, signals=(), popen=self._popen)
        self._cleanup()

    def _cleanup(self) -> None:
        self._popen = None
        self.pid_file.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        """What stack.json / kafka.json record about this server."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "port": self.port,
            "controller_port": self.controller_port,
            "heap": self.heap,
            "jvm_opts": self.jvm_opts,
            "security_protocol": self.security_protocol,
            "node_id": self.node_id,
            "quorum_voters": self.quorum_voters,
            "cluster_id": self.cluster_id,
            "replication": self.replication,
            "pid": self.pid,
            "create_time": self._create_time,
            "workdir": str(self.workdir),
            "log": str(self.log_file),
            "stdout": str(self.out_file),
        }

    def rss(self) -> int:
        """Resident memory of the JVM in bytes (0 when not running)."""
        return _proc.rss_bytes(self.pid) if self.pid else 0


async def probe(bootstrap_servers: str, timeout_ms: int = 3000, min_brokers: int = 1, **options: Any) -> bool:
    """True when the cluster answers a metadata request and has at least `min_brokers` live brokers."""
    from aiokafka.admin import AIOKafkaAdminClient

    options["bootstrap_servers"] = bootstrap_servers
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return len(cluster.get("brokers") or []) >= min_brokers
    finally:
        await admin.close()


class KafkaCluster:
    """`size` combined broker+controller nodes from the same jars, one workdir each (``<workdir>/node<i>``),
    with static voters and one cluster id; topics get `size` replicas (at most 3) and min.insync.replicas 2.

    ``ports``: one client port per node (its controller port is the next one unless given in
    ``controller_ports``). A single-node "cluster" is just `KafkaServer`: use that."""

    def __init__(
        self,
        workdir: Path | str,
        ports: Sequence[int],
        controller_ports: Sequence[int] | None = None,
        heap: str = "256m",
        *,
        sasl_users: Mapping[str, str] | None = None,
        jvm_opts: Sequence[str] = (),
        cluster_id: str | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        controller_ports = list(controller_ports or [p + 1 for p in ports])
        if len(controller_ports) != len(ports) or len(ports) < 2:
            raise ValueError("a cluster needs two nodes or more, each with a client and a controller port")
        voters = ",".join(f"{i}@{_HOST}:{cp}" for i, cp in enumerate(controller_ports, start=1))
        replication = min(len(ports), 3)
        cid = cluster_id or self._recorded_cluster_id() or new_cluster_id()
        self.nodes = [
            KafkaServer(self.workdir / f"node{i}", port=p, controller_port=cp, heap=heap, jvm_opts=jvm_opts,
                        sasl_users=sasl_users, node_id=i, quorum_voters=voters, cluster_id=cid, replication=replication)
            for i, (p, cp) in enumerate(zip(ports, controller_ports), start=1)
        ]

    def _recorded_cluster_id(self) -> str | None:
        state = _proc.read_json(self.workdir / "node1" / "kafka.json") or {}
        return state.get("cluster_id")

    @classmethod
    def attach(cls, workdir: Path | str) -> KafkaCluster | None:
        """The cluster recorded in `workdir` if every node's process is alive, else None."""
        workdir = Path(workdir).resolve()
        nodes = [KafkaServer.attach(d) for d in sorted(workdir.glob("node*"))]
        if len(nodes) < 2 or any(n is None for n in nodes):
            return None
        cluster = cls.__new__(cls)
        cluster.workdir = workdir
        cluster.nodes = [n for n in nodes if n is not None]
        return cluster

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap_servers for n in self.nodes)

    @property
    def sasl_users(self) -> dict[str, str] | None:
        return self.nodes[0].sasl_users

    @property
    def replication(self) -> int:
        return self.nodes[0].replication

    def access(self) -> KafkaAccess:
        return KafkaAccess(self.bootstrap_servers, self.sasl_users)

    def start(self, timeout: float = 180.0) -> str:
        """Start every node at once (none is ready before a majority of the voters runs)."""
        from concurrent.futures import ThreadPoolExecutor

        ensure_jars()
        with ThreadPoolExecutor(max_workers=len(self.nodes), thread_name_prefix="kafka-node") as pool:
            for future in [pool.submit(n.start, timeout) for n in self.nodes]:
                future.result()
        self.wait_all_registered(timeout)
        return self.bootstrap_servers

    def wait_ready(self, timeout: float = 180.0) -> None:
        for n in self.nodes:
            n.wait_ready(timeout)
        self.wait_all_registered(timeout)

    def wait_all_registered(self, timeout: float = 180.0) -> None:
        """Until every node is a live broker in the metadata. A node answers as soon as it is itself
        registered, so without this a topic created right after start could get a replication factor
        of 2 from a cluster of 3 (seen in CI: the size is read from the live brokers)."""
        first = self.nodes[0]
        _proc.wait_until_ready(
            "kafka cluster", is_running=lambda: all(n.is_running() for n in self.nodes), host=_HOST, port=first.port,
            timeout=timeout,
            probe=lambda: _proc.run_coro_sync(lambda: probe(**first.client_options(), min_brokers=len(self.nodes))),
            log_tail=lambda: "\n".join(f"node {n.node_id}: {_proc.tail(n.log_file, 10)}" for n in self.nodes),
        )

    def stop(self, timeout: float = 30.0) -> None:
        for n in reversed(self.nodes):
            n.stop(timeout)

    def describe(self) -> dict[str, Any]:
        first = self.nodes[0].describe()
        return {
            **first,
            "bootstrap_servers": self.bootstrap_servers,
            "workdir": str(self.workdir),
            "brokers": len(self.nodes),
            "nodes": [n.describe() for n in self.nodes],
        }
