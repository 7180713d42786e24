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
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import string
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _proc
from ._proc import ServerStartError
from .paths import cache_dir as default_cache_dir
from .paths import deploy_dir

JARS_MARKER = ".complete"
_HOST = "127.0.0.1"


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


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (22 characters)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like a command-line option
            return cid


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
    ) -> None:
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

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def attach(cls, workdir: Path | str) -> KafkaServer | None:
        """The server recorded in ``workdir`` if its process is still alive, else None."""
        workdir = Path(workdir).resolve()
        state = _proc.read_json(workdir / "kafka.json")
        if not state:
            return None
        server = cls(
            workdir,
            port=state["port"],
            controller_port=state["controller_port"],
            heap=state.get("heap", "256m"),
            jvm_opts=state.get("jvm_opts", ()),
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
        )
        self.properties_file.write_text(text)

    def _format_storage(self, classpath: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._java_base("128m"),
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.properties_file),
        ]
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

        cmd = [*self._java_base(self.heap), "-cp", classpath, "kafka.Kafka", str(self.properties_file)]
        _proc.launch(self, cmd, cwd=self.workdir, output=self.out_file, deadline=deadline)
        return self.bootstrap_servers

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll until the broker lists itself in a metadata response (connecting, not sleeping)."""
        _proc.wait_until_ready(
            "kafka", is_running=self.is_running, host=_HOST, port=self.port, timeout=timeout,
            probe=lambda: _proc.run_coro_sync(lambda: probe(self.bootstrap_servers)),
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
            "pid": self.pid,
            "create_time": self._create_time,
            "workdir": str(self.workdir),
            "log": str(self.log_file),
            "stdout": str(self.out_file),
        }

    def rss(self) -> int:
        """Resident memory of the JVM in bytes (0 when not running)."""
        return _proc.rss_bytes(self.pid) if self.pid else 0


async def probe(bootstrap_servers: str, timeout_ms: int = 3000) -> bool:
    """True when the cluster answers a metadata request and has at least one live broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    finally:
        await admin.close()
