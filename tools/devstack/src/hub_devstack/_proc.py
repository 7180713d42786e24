"""Small process helpers shared by the servers: pid records, liveness, stopping by pid, waiting on ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


class ServerStartError(RuntimeError):
    """A server did not become ready (its process died or the timeout passed)."""


def tail(path: Path, lines: int = 40) -> str:
    """Last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True if `pid` is a live (non-zombie) process; when `create_time` is given it must match too,
    so a recycled pid is not mistaken for our server."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            # A JVM whose main thread has exited shows as a zombie while its other threads still
            # run (and shut it down): only a zombie without threads has really finished.
            try:
                return proc.num_threads() > 1
            except psutil.Error:
                return False
        return create_time is None or abs(proc.create_time() - create_time) <= 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _reap(pid: int, popen: subprocess.Popen[Any] | None) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    if popen is not None:
        popen.poll()
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:  # not our child (ChildProcessError) or already reaped
        pass


def wait_pid_gone(pid: int, timeout: float, popen: subprocess.Popen[Any] | None = None) -> bool:
    """Wait until `pid` has exited (reaping it when it is our child). True if gone."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid, popen)
        if popen is not None and popen.returncode is not None:
            return True  # our child, exited and reaped
        if popen is None and not pid_alive(pid):
            _reap(pid, popen)  # it may have turned into a zombie just after the first reap
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_pid(
    pid: int,
    *,
    create_time: float | None = None,
    signals: Sequence[tuple[int, float]] = ((signal.SIGTERM, 30.0),),
    popen: subprocess.Popen[Any] | None = None,
) -> bool:
    """Send each signal in turn, waiting up to its timeout for the process to exit; SIGKILL last.

    Returns True if the process had been running (and is now gone)."""
    if not pid_alive(pid, create_time):
        _reap(pid, popen)  # (a zombie child of ours, if it is one)
        return False
    for sig, timeout in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if wait_pid_gone(pid, timeout, popen):
            return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_pid_gone(pid, 10.0, popen)
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ensure_port_free(host: str, port: int, what: str) -> None:
    if port_open(host, port, timeout=0.3):
        raise ServerStartError(f"{what}: port {host}:{port} is already in use by another process")


def run_coro_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is already running
    in this thread (then it runs in a helper thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coro(factory))
    result: list[T] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(_as_coro(factory)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    t = threading.Thread(target=runner, name="hub-devstack-probe", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


async def _as_coro(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def rss_bytes(pid: int, include_children: bool = False) -> int:
    """Resident memory of a process (optionally plus its children), 0 if it is gone."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        if include_children:
            for child in proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        return int(total)
    except psutil.NoSuchProcess:
        return 0


def wait_until_ready(
    what: str,
    *,
    is_running: Callable[[], bool],
    host: str,
    port: int,
    probe: Callable[[], Any],
    timeout: float,
    log_tail: Callable[[], str],
    interval: float = 0.2,
) -> None:
    """Poll a starting server by connecting (`probe` returns truthy or raises), never by sleeping a
    fixed time; fail with the log's tail if it exits or is not ready within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if not is_running():
            raise ServerStartError(f"{what} exited during start-up:\n{log_tail()}")
        if port_open(host, port):
            try:
                if probe():
                    return
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last_error = exc
        if time.monotonic() >= deadline:
            raise ServerStartError(f"{what} not ready after {timeout:.0f}s (last error: {last_error!r}); log tail:\n{log_tail()}")
        time.sleep(interval)


def launch(server: Any, cmd: list[str], *, cwd: Path, output: Path, deadline: float, **popen_kwargs: Any) -> None:
    """Start a server process in its own session, record its pid and state, and wait until it is
    ready (by the server's own `wait_ready`); a server that never gets ready is stopped again."""
    with output.open("ab") as out:
        server._popen = subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **popen_kwargs,
        )
    server.pid = server._popen.pid
    server._create_time = process_create_time(server.pid)
    server.pid_file.write_text(f"{server.pid}\n")
    write_json(server.state_file, server.describe())
    try:
        server.wait_ready(max(1.0, deadline - time.monotonic()))
    except BaseException:
        server.stop(timeout=10)
        raise
