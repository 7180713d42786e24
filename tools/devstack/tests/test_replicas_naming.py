"""Replica names, ports and the stack.json records `scale` and `status` rely on (no servers needed)."""

from __future__ import annotations

import os
from pathlib import Path

from hub_devstack import replicas, stack


def test_replica_one_is_the_process_make_up_starts_and_the_others_get_their_own_port_log_and_instance() -> None:
    assert [replicas.replica_name("tasks", i) for i in (1, 2, 3)] == ["tasks", "tasks-2", "tasks-3"]
    assert [replicas.replica_port("tasks", i) for i in (1, 2, 3)] == [8083, 8183, 8283]
    ports = {replicas.replica_port(s, i) for s in replicas.HUB_SERVICES for i in range(1, replicas.MAX_REPLICAS + 1)}
    assert len(ports) == len(replicas.HUB_SERVICES) * replicas.MAX_REPLICAS  # no two replicas share a port
    assert replicas.instance_id("tasks", 1) == "tasks-1"


def test_running_replicas_are_the_live_records_of_that_service(tmp_path: Path) -> None:
    me = os.getpid()
    stack.record_process(tmp_path, "tasks", me, service="tasks", replica=1)
    stack.record_process(tmp_path, "tasks-3", me, service="tasks", replica=3)
    stack.record_process(tmp_path, "linking", me, service="linking", replica=1)
    stack.record_process(tmp_path, "tasks-2", 2**22 + 1, service="tasks", replica=2)  # not running
    found = replicas.running_replicas(tmp_path, "tasks")
    assert sorted(found) == [1, 3] and found[3]["name"] == "tasks-3"


def test_status_lists_partitions_compactly() -> None:
    assert replicas._compact(["crm.ingest:0", "crm.ingest:3", "pm.ingest:1"]) == "crm.ingest[0,3] pm.ingest[1]"
    assert replicas._compact([]) == "(none)"
