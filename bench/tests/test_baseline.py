"""`make bench BASE=<ref>`: a git ref checked out as a worktree with its own venv, its services run from there.

Speed is not asserted; this checks the mechanics: the ref resolves to a commit, the worktree is made once per
commit and reused, a service process started for the baseline runs the baseline tree's Python and code (and
completes a small backlog through the real broker and database), and the report divides new by old.
"""

from __future__ import annotations

import math

import psutil
import pytest

from bench import baseline
from bench import harness as h
from bench.report import comparison, ratios
from bench.run import Pipeline, same_rate
from bench.scenarios import ECHO
from hub_devstack.pytest_plugin import TestKafka


def test_a_ref_resolves_to_its_commit_and_a_bad_ref_is_refused() -> None:
    assert baseline.resolve("HEAD") == baseline.git("rev-parse", "HEAD")
    assert baseline.resolve(baseline.DEFAULT_REF).startswith(baseline.DEFAULT_REF)
    with pytest.raises(ValueError, match="names no commit"):
        baseline.resolve("no-such-ref-anywhere")


def test_new_over_old_for_each_figure() -> None:
    new = {"scenario": "echo", "max": {"steady_rate": 3000.0, "cpu_ms_per_event": 0.2}, "at50": {"p50_ms": 20.0},
           "at80": {"p99_ms": 100.0}, "rss_peak_mb": 80.0}
    old = {"scenario": "echo", "max": {"steady_rate": 1000.0, "cpu_ms_per_event": 0.5}, "at50": {"p50_ms": 40.0},
           "at80": {"p99_ms": 500.0}, "rss_peak_mb": 80.0}
    got = {name: q for name, _, _, q in ratios(new, old)}
    assert got["sustained max/s"] == 3.0 and got["p50 at 50% load (ms)"] == 0.5 and got["p99 at 80% load (ms)"] == 0.2
    assert got["service CPU ms per event"] == pytest.approx(0.4) and got["peak RSS (MB)"] == 1.0
    assert all(math.isnan(q) for _, _, _, q in ratios(new, {"scenario": "echo"})), "a missing figure is n/a, not an error"
    text = "\n".join(comparison({"scenarios": [new], "baseline": {"describe": "d57f9af", "scenarios": [old]}}))
    assert "| echo    | sustained max/s" in text and "3.00" in text
    assert "same rate" not in text and "both" not in text.split("\n", 1)[1], "no same-rate run: no row for it"


def test_the_same_rate_run_is_compared_under_the_same_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_BENCH_SAME_RATE", "tasks=300,echo=600")
    assert (same_rate("tasks"), same_rate("echo"), same_rate("linking")) == (300.0, 600.0, None)
    monkeypatch.setenv("HUB_BENCH_SAME_RATE", "250")
    assert same_rate("linking") == 250.0
    new = {"scenario": "tasks", "same": {"target_rate": 300.0, "p50_ms": 30.0, "p99_ms": 90.0}}
    old = {"scenario": "tasks", "same": {"target_rate": 300.0, "p50_ms": 60.0, "p99_ms": 360.0}}
    got = {name: q for name, _, _, q in ratios(new, old)}
    assert got["p50 at the same rate (ms)"] == 0.5 and got["p99 at the same rate (ms)"] == 0.25
    text = "\n".join(comparison({"scenarios": [new], "baseline": {"describe": "d57f9af", "scenarios": [old]}}))
    assert "| tasks   | p50 at 300/s, both (ms)" in text and "| 0.50 " in text and "| 0.25 " in text


@pytest.mark.integration
async def test_a_service_runs_from_the_baseline_worktree_and_its_own_venv(test_kafka: TestKafka, pg_admin_dsn: str,
                                                                          tmp_path) -> None:
    tree = baseline.checkout(baseline.DEFAULT_REF)
    assert tree.root == baseline.TREES / baseline.resolve(baseline.DEFAULT_REF)
    assert baseline.git("rev-parse", "HEAD", cwd=tree.root) == tree.sha, "the worktree is detached at the commit"
    assert tree.python.is_relative_to(tree.root), "its own venv, not the bench's"
    assert baseline.checkout(baseline.DEFAULT_REF) == tree, "made once per commit, reused"

    infra = h.Infra(test_kafka.bootstrap, pg_admin_dsn, "test", test_kafka)
    dbs = h.Databases(infra)
    try:
        name, dsns = await dbs.create(["echo"], "baseline_smoke")
        p = Pipeline(ECHO, infra, dsns["echo"], h.with_database(pg_admin_dsn, name), tmp_path, tree)
        try:
            await p.start()
            proc = psutil.Process(p.proc.pid)
            assert proc.cmdline()[0] == str(tree.python) and proc.cwd() == str(tree.root)
            result = await p.max_rate(100, None)
            assert result["complete"] == 1.0 and result["events"] == 100
            assert result["cpu_ms_per_event"] > 0
        finally:
            await p.stop()
    finally:
        await dbs.drop_all()
