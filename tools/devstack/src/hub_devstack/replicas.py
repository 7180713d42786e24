"""Replicas of a service on the local stack: `python -m hub_devstack scale tasks 3`, the group view of `status`,
and `handover`, which measures how long partitions are without an owner when a replica comes or goes.

Replica 1 of a service is the process `make up` starts (`tasks`, port 8083, logs/tasks.log); replica k is
`tasks-k` on port 8083 + 100·(k-1) with logs/tasks-k.log. Each is recorded in stack.json (so `make down` stops
it) and joins the consumer group as a static member named `tasks-k` (HUB_KAFKA__GROUP_INSTANCE_ID): restarted
within the session timeout it gets its own partitions back without moving anyone else's. A static member does not
leave the group when it stops, so scaling down stops the replica (SIGTERM: the batch in hand commits) and then
removes its member from the group at once (`hub_platform.groups.remove_static_members`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from hub_platform.groups import (
    GroupView,
    Partition,
    describe_group,
    group_lag,
    remove_static_members,
    topic_partitions,
    wait_settled,
)

from . import _proc, stack

HUB_SERVICES: tuple[str, ...] = ("identity", "linking", "tasks", "notifications")
BASE_PORTS: dict[str, int] = {"identity": 8081, "linking": 8082, "tasks": 8083, "notifications": 8084, "sandbox": 8090,
                              "crm-connector": 8091, "pm-connector": 8092}
PORT_STEP = 100
MAX_REPLICAS = 6  # the ingest topics have 6 partitions: a 7th replica would own nothing of them


def replica_name(service: str, index: int) -> str:
    return service if index == 1 else f"{service}-{index}"


def replica_port(service: str, index: int) -> int:
    return BASE_PORTS[service] + PORT_STEP * (index - 1)


def instance_id(service: str, index: int) -> str:
    return f"{service}-{index}"


def _script(service: str) -> str:
    candidate = Path(sys.executable).parent / f"hub-{service}"
    if not candidate.exists():
        raise RuntimeError(f"{candidate} is missing: run `make install`")
    return str(candidate)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except Exception:  # noqa: BLE001 - not ready (yet)
        return False


def launch(state_dir: Path, info: dict[str, Any], service: str, index: int) -> dict[str, Any]:
    """Start replica `index` of `service` in its own session, record it in stack.json; does not wait."""
    name, port = replica_name(service, index), replica_port(service, index)
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    env = {
        **os.environ,
        **info["services"][service]["env"],
        **stack.ensure_tokens(state_dir),
        **stack.kafka_env(info, service),
        "HUB_HTTP_PORT": str(port),
        "HUB_OBS__LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    if service in HUB_SERVICES:
        env["HUB_KAFKA__GROUP_INSTANCE_ID"] = instance_id(service, index)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([_script(service)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    stack.record_process(state_dir, name, proc.pid, log=log_path, stop_signal="SIGTERM", stop_timeout=30, port=port,
                         service=service, replica=index)
    return {"pid": proc.pid, "port": port, "log": str(log_path), "proc": proc, "name": name, "service": service,
            "replica": index}


def wait_ready(rec: dict[str, Any], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready(rec["port"]):
        proc = rec.get("proc")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{rec['name']} exited with {proc.returncode}:\n{_proc.tail(Path(rec['log']))}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{rec['name']} not ready on :{rec['port']} after {timeout:.0f}s:\n{_proc.tail(Path(rec['log']))}")
        time.sleep(0.2)


def running_replicas(state_dir: Path, service: str) -> dict[int, dict[str, Any]]:
    """replica index -> its stack.json record, for the live ones."""
    out = {}
    for name, rec in stack.read_stack(state_dir).get("processes", {}).items():
        index = rec.get("replica") or (1 if name == service else None)
        if (rec.get("service") or name) == service and index and _proc.pid_alive(rec.get("pid"), rec.get("create_time")):
            out[int(index)] = {**rec, "name": name}
    return dict(sorted(out.items()))


# -- the group, from the coordinator ---------------------------------------------------------------------------


class Group:
    """An admin client on the stack's broker, for one service's consumer group."""

    def __init__(self, info: dict[str, Any], service: str) -> None:
        self.bootstrap = info["kafka"]["bootstrap_servers"]
        self.group = service
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15000)

    async def __aenter__(self) -> Group:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def view(self) -> GroupView:
        return await describe_group(self.admin, self.group)

    async def partitions(self, view: GroupView | None = None) -> list[Partition]:
        view = view or await self.view()
        return await topic_partitions(self.admin, sorted(view.topics)) if view.topics else []

    async def settled(self, partitions: list[Partition], members: int, gone: set[str] = frozenset(),  # type: ignore[assignment]
                      timeout: float = 120.0) -> tuple[float, GroupView]:
        return await wait_settled(
            self.admin, self.group, partitions, members=members, timeout=timeout,
            excluding=lambda v: not any(m.instance_id in gone for m in v.members),
        )


def _stop(state_dir: Path, rec: dict[str, Any], sig: signal.Signals) -> float:
    """Signal one replica by pid and wait until it has exited; returns the seconds that took."""
    started = time.monotonic()
    _proc.stop_pid(rec["pid"], create_time=rec.get("create_time"), signals=((sig, 30.0),))
    stack.forget_process(state_dir, rec["name"])
    return time.monotonic() - started


async def scale(state_dir: Path, service: str, count: int, *, out: Any = sys.stdout) -> dict[str, Any]:
    """Start or stop replicas of `service` until `count` run; print and return how long the group took to settle
    (every partition owned once, by exactly the replicas that run)."""
    if service not in HUB_SERVICES:
        raise ValueError(f"{service}: one of {', '.join(HUB_SERVICES)}")
    if not 1 <= count <= MAX_REPLICAS:
        raise ValueError(f"replicas: 1 to {MAX_REPLICAS} (the ingest topics have {MAX_REPLICAS} partitions)")
    info = stack.read_stack(state_dir)
    if not info.get("services"):
        raise RuntimeError(f"no stack in {state_dir}: run `make up` first")
    current = running_replicas(state_dir, service)
    result: dict[str, Any] = {"service": service, "before": len(current), "after": count}
    async with Group(info, service) as group:
        partitions = await group.partitions()
        if count > len(current):
            t0 = time.monotonic()
            indexes = [i for i in range(1, MAX_REPLICAS + 1) if i not in current][: count - len(current)]
            new = [launch(state_dir, info, service, i) for i in indexes]
            for rec in new:
                await asyncio.to_thread(wait_ready, rec)
            result["ready_s"] = round(time.monotonic() - t0, 2)
            partitions = partitions or await group.partitions()
            _, view = await group.settled(partitions, count)
            result["settled_s"] = round(time.monotonic() - t0, 2)
            print(f"{service}: started {', '.join(r['name'] for r in new)}; ready after {result['ready_s']:.1f}s, "
                  f"partitions spread over {count} replicas after {result['settled_s']:.1f}s", file=out)
        elif count < len(current):
            leaving = sorted(current)[count:]
            t0 = time.monotonic()
            stop_s = [await asyncio.to_thread(_stop, state_dir, current[i], signal.SIGTERM) for i in leaving]
            gone = {instance_id(service, i) for i in leaving}
            await remove_static_members(group.admin, service, gone)
            _, view = await group.settled(partitions, count, gone)
            result["stop_s"] = round(max(stop_s), 2)
            result["settled_s"] = round(time.monotonic() - t0, 2)
            print(f"{service}: stopped {', '.join(current[i]['name'] for i in leaving)} (graceful, {result['stop_s']:.1f}s); "
                  f"{count} remaining replica(s) own every partition {result['settled_s']:.1f}s after the stop began", file=out)
        else:
            view = await group.view()
            print(f"{service}: {count} replicas already run", file=out)
    result["owned_twice"] = view.owned_twice()
    return result


async def handover(state_dir: Path, service: str, *, out: Any = sys.stdout) -> dict[str, float]:
    """Measure, with one extra replica on the running stack: scale-up, graceful stop, SIGKILL. Restores the count."""
    info = stack.read_stack(state_dir)
    current = running_replicas(state_dir, service)
    if not current:
        raise RuntimeError(f"{service} does not run: `make up` first")
    base = len(current)
    index = next(i for i in range(1, MAX_REPLICAS + 2) if i not in current)
    figures: dict[str, float] = {}
    async with Group(info, service) as group:
        partitions = await group.partitions()

        async def add() -> dict[str, Any]:
            t0 = time.monotonic()
            rec = launch(state_dir, info, service, index)
            await asyncio.to_thread(wait_ready, rec)
            ready_s = time.monotonic() - t0
            _, view = await group.settled(partitions, base + 1)
            if view.owned_twice():
                raise RuntimeError(f"partitions owned twice: {view.owned_twice()}")
            return {**rec, "create_time": _proc.process_create_time(rec["pid"]), "ready_s": ready_s,
                    "settled_s": time.monotonic() - t0}

        rec = await add()
        figures["start_to_ready_s"] = round(rec["ready_s"], 2)
        figures["scale_up_s"] = round(rec["settled_s"] - rec["ready_s"], 2)
        t0 = time.monotonic()
        await asyncio.to_thread(_stop, state_dir, rec, signal.SIGTERM)
        await remove_static_members(group.admin, service, [instance_id(service, index)])
        await group.settled(partitions, base, {instance_id(service, index)})
        figures["graceful_stop_s"] = round(time.monotonic() - t0, 2)

        rec = await add()
        t0 = time.monotonic()
        await asyncio.to_thread(_stop, state_dir, rec, signal.SIGKILL)
        await group.settled(partitions, base, {instance_id(service, index)})
        figures["sigkill_s"] = round(time.monotonic() - t0, 2)
    print(f"{service} with {base} -> {base + 1} -> {base} replicas ({len(partitions)} partitions):\n"
          f"  scale-up       {figures['scale_up_s']:6.2f} s  from the new replica ready to the partitions spread over "
          f"{base + 1} (its start-up to /readyz took {figures['start_to_ready_s']:.2f} s)\n"
          f"  graceful stop  {figures['graceful_stop_s']:6.2f} s  from SIGTERM to the others owning every partition\n"
          f"  SIGKILL        {figures['sigkill_s']:6.2f} s  (the session timeout: nobody tells the coordinator)", file=out)
    return figures


async def group_report(state_dir: Path) -> dict[str, Any]:
    """service -> {state, replicas: [{name, pid, port, partitions, lag}], lag} for the hub services that run."""
    info = stack.read_stack(state_dir)
    report: dict[str, Any] = {}
    for service in HUB_SERVICES:
        replicas = running_replicas(state_dir, service)
        if not replicas:
            continue
        async with Group(info, service) as group:
            view = await group.view()
            lags = {(p.topic, p.partition): p.lag for p in await group_lag(
                group.admin, {"bootstrap_servers": group.bootstrap}, service, await group.partitions(view))}
        by_instance = {m.instance_id: m for m in view.members}
        rows = []
        for index, rec in replicas.items():
            member = by_instance.pop(instance_id(service, index), None)
            parts = sorted(member.partitions) if member else []
            rows.append({"name": rec["name"], "pid": rec["pid"], "port": rec.get("port"), "member": bool(member),
                         "partitions": [f"{t}:{p}" for t, p in parts], "lag": sum(lags.get(p, 0) for p in parts)})
        for member in by_instance.values():  # in the group but not ours (another process, or a killed static member)
            parts = sorted(member.partitions)
            rows.append({"name": member.instance_id or member.member_id, "pid": None, "port": None, "member": True,
                         "partitions": [f"{t}:{p}" for t, p in parts], "lag": sum(lags.get(p, 0) for p in parts)})
        report[service] = {"state": view.state, "replicas": rows, "lag": sum(lags.values()),
                           "owned_twice": [f"{t}:{p}" for t, p in view.owned_twice()]}
    return report


def _compact(partitions: list[str]) -> str:
    """crm.ingest:0, crm.ingest:2 -> crm.ingest[0,2]"""
    by_topic: dict[str, list[str]] = {}
    for item in partitions:
        topic, number = item.rsplit(":", 1)
        by_topic.setdefault(topic, []).append(number)
    return " ".join(f"{t}[{','.join(n)}]" for t, n in by_topic.items()) or "(none)"


def print_groups(report: dict[str, Any], out: Any = sys.stdout) -> None:
    for service, group in report.items():
        print(f"\n  group {service}: {group['state']}, {len(group['replicas'])} member(s), lag {group['lag']}"
              + (f"  OWNED TWICE: {group['owned_twice']}" if group["owned_twice"] else ""), file=out)
        for row in group["replicas"]:
            where = f"pid {row['pid']!s:<8} :{row['port']}" if row["pid"] else "(not started here)    "
            print(f"    {row['name']:<16} {where}  {len(row['partitions']):>2} partitions  lag {row['lag']:>6}  "
                  f"{_compact(row['partitions'])}", file=out)
