"""`make up` restarts a service that exits wedged (and only that exit), a bounded number of times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub_devstack import services as up
from hub_platform.service import WEDGED_EXIT_CODE


def exited(code: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait()
    return proc


def test_at_most_max_restarts_within_the_window_then_again_after_it() -> None:
    history: list[float] = []
    assert [up.restart_allowed(history, t) for t in range(up.MAX_RESTARTS + 1)] == [True] * up.MAX_RESTARTS + [False]
    assert up.restart_allowed(history, up.RESTART_WINDOW_SECONDS + 0.5), "the oldest restart left the window"


def test_a_wedged_exit_is_restarted_any_other_exit_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    launched: list[tuple[str, int]] = []

    def launch(state_dir: Path, info: dict[str, Any], service: str, index: int) -> dict[str, Any]:
        launched.append((service, index))
        return {"proc": None, "log": "new.log", "service": service, "replica": index}

    monkeypatch.setattr(up.replicas, "launch", launch)
    services = {
        "tasks-2": {"proc": exited(WEDGED_EXIT_CODE), "service": "tasks", "replica": 2, "log": "tasks-2.log"},
        "linking": {"proc": exited(1), "service": "linking", "replica": 1, "log": "linking.log"},
        "identity": {"proc": exited(0), "service": "identity", "replica": 1, "log": "identity.log"},
    }
    up.supervise_once(tmp_path, {}, services, {}, now=100.0)
    err = capsys.readouterr().err
    assert launched == [("tasks", 2)], "the same replica (its name, port and group instance id) comes back"
    assert services["tasks-2"]["log"] == "new.log", "the new process is the one watched from now on"
    assert "tasks-2 exited wedged" in err and "restart 1 of at most" in err
    assert "linking exited with 1" in err and services["linking"]["reported"]
    assert "identity" not in err and not services["identity"].get("reported"), "a clean exit is no crash"

    up.supervise_once(tmp_path, {}, services, {}, now=101.0)
    assert launched == [("tasks", 2)] and capsys.readouterr().err == "", "each exit is handled once"


def test_a_service_that_keeps_wedging_is_left_down_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(up.replicas, "launch", lambda *a: pytest.fail("restarted past the bound"))
    services = {"tasks": {"proc": exited(WEDGED_EXIT_CODE), "service": "tasks", "replica": 1, "log": "tasks.log"}}
    restarts = {"tasks": [50.0 + i for i in range(up.MAX_RESTARTS)]}
    up.supervise_once(tmp_path, {}, services, restarts, now=100.0)
    assert f"tasks exited with {WEDGED_EXIT_CODE}" in capsys.readouterr().err and services["tasks"]["reported"]
