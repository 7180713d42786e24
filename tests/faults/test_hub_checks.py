"""The four-service run's checks can fail: the ownership log check and the exactly-once count, fed known cases
(no servers; the run itself is test_faults_hub.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from faultkit import Figures, ServiceProc
from hubkit import _once, overlaps, ownership_intervals


def _line(event: str, stamp: float, *partitions: str) -> str:
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"
    return json.dumps({"event": event, "partitions": list(partitions), "timestamp": iso})


def _replica(tmp_path: Path, name: str, lives: list[tuple[float, float | None, list[str]]]) -> ServiceProc:
    proc = ServiceProc(name, ["true"], {"HUB_HTTP_PORT": "1"}, tmp_path)
    text = ""
    for n, (start, end, lines) in enumerate(lives, start=1):
        text += f"\n=== start #{n} ===\n" + "\n".join(lines) + "\n"
        proc.lives.append([start, end])
    proc.log.write_text(text)
    return proc


def test_a_handover_is_back_to_back_and_a_second_owner_is_an_overlap(tmp_path: Path) -> None:
    t = 1_800_000_000.0
    a = _replica(tmp_path, "tasks", [(t, None, [_line("partitions assigned", t + 1, "crm.ingest:0", "crm.ingest:1"),
                                               _line("partitions revoked", t + 5, "crm.ingest:0", "crm.ingest:1"),
                                               _line("partitions assigned", t + 6, "crm.ingest:0")])])
    b = _replica(tmp_path, "tasks-2", [(t, None, [_line("partitions assigned", t + 5.5, "crm.ingest:1")])])
    clean = ownership_intervals([a, b], run_end=t + 100)
    assert len(clean) == 4 and overlaps(clean) == []

    # killed at t+20 (its life closes there), its partition handed over at t+30: still fine
    killed = _replica(tmp_path, "linking", [(t, t + 20, [_line("partitions assigned", t + 1, "crm.ingest:2")])])
    heir = _replica(tmp_path, "linking-2", [(t, None, [_line("partitions assigned", t + 30, "crm.ingest:2")])])
    assert overlaps(ownership_intervals([killed, heir], run_end=t + 100)) == []

    # a replica that never revoked while another got the partition: reported
    stale = _replica(tmp_path, "identity", [(t, None, [_line("partitions assigned", t + 1, "pm.ingest:3")])])
    other = _replica(tmp_path, "identity-2", [(t, None, [_line("partitions assigned", t + 9, "pm.ingest:3")])])
    found = overlaps(ownership_intervals([stale, other], run_end=t + 100))
    assert len(found) == 1 and "identity pm.ingest:3" in found[0]


def test_a_wedged_replica_owns_nothing_from_its_stuck_commit_on(tmp_path: Path) -> None:
    """A replica whose offset commit never returned logs `consumer wedged` (since = when the commit began) and
    exits; from `since` on it handled nothing, so an heir assigned after that is no overlap, one before it is."""
    t = 1_800_000_000.0
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + 10)) + ".000000Z"
    wedged_line = json.dumps({"event": "ALERT consumer wedged: the offset commit did not return; exiting for a restart",
                              "alert": "consumer_wedged", "since": iso.replace("Z", "+00:00"),
                              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + 70)) + ".000000Z"})
    wedged = _replica(tmp_path, "linking", [(t, t + 70, [_line("partitions assigned", t + 1, "crm.ingest:0"), wedged_line])])
    heir = _replica(tmp_path, "linking-2", [(t, None, [_line("partitions assigned", t + 21, "crm.ingest:0")])])
    assert overlaps(ownership_intervals([wedged, heir], run_end=t + 100)) == []
    early = _replica(tmp_path, "linking-3", [(t, None, [_line("partitions assigned", t + 5, "crm.ingest:0")])])
    assert len(overlaps(ownership_intervals([wedged, early], run_end=t + 100))) == 1


def test_exactly_once_reports_the_missing_the_doubled_and_the_forbidden() -> None:
    figures = Figures("control")
    got = {"a": {"c1"}, "b": {"c2", "c3"}, "x": {"c4"}}
    _once(figures, "accounts", {"a", "b", "c"}, got, forbidden={"x"})
    assert figures.effects["accounts"] == [1, 3]
    assert (figures.lost, figures.duplicated) == (1, 1)
    assert len(figures.problems) == 3
