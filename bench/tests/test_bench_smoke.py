"""Smoke test of the bench harness: a 200-event run through the echo service completes and reports a rate.

Speed is never asserted here (figures are printed by `make bench`, not tested); this only
proves the harness can start a service process, seed it, drive it and read its output.
"""

from __future__ import annotations

import pytest

from bench import harness as h
from hub_devstack.pytest_plugin import TestKafka
from bench.run import Pipeline, db_baselines
from bench.scenarios import ECHO

pytestmark = pytest.mark.integration


async def _topics(kafka: TestKafka) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def test_200_events_through_echo_complete_with_a_positive_rate(test_kafka: TestKafka, pg_admin_dsn: str, tmp_path) -> None:
    infra = h.Infra(test_kafka.bootstrap, pg_admin_dsn, "test", test_kafka)
    dbs = h.Databases(infra)
    try:
        _, direct = await dbs.create(["echo"], "smoke_direct")
        base = await db_baselines(ECHO, direct["echo"], 50)
        assert base["db_per_event"] > 0 and base["db_platform_batch"] > 0
        name, dsns = await dbs.create(["echo"], "smoke")
        p = Pipeline(ECHO, infra, dsns["echo"], h.with_database(pg_admin_dsn, name), tmp_path)
        try:
            await p.start()
            result = await p.max_rate(200, None)
            assert result["complete"] == 1.0 and result["events"] == 200
            assert result["steady_rate"] > 0
            paced = await p.paced(100, 1.0, sample_lag=True)
            assert paced["received"] == paced["sent"] > 0
            assert paced["p50_ms"] > 0
            # the service-side split: every event's transaction started after it was produced, before it came out
            assert 0 < paced["consumed_p50_ms"] <= paced["p50_ms"]
        finally:
            await p.stop()
        assert p.proc.peak_rss > 0
        # the run's topics went with it
        assert not [t for t in await _topics(test_kafka) if t.startswith(p.prefix)]
    finally:
        await dbs.drop_all()


async def test_stall_probe_measures_a_frozen_service_and_its_batches(test_kafka: TestKafka, pg_admin_dsn: str) -> None:
    from bench.stall import one

    res = await one(50, 100, 0.2, run_seconds=3, infra=h.Infra(test_kafka.bootstrap, pg_admin_dsn, "test", test_kafka))
    assert res["received"] == res["sent"] > 0
    assert res["tail_batches"] >= 1 and res["tail_batch_max"] >= res["tail_batch_p50"] >= 1


async def test_scaling_row_runs_two_replicas_that_split_the_partitions(test_kafka: TestKafka, pg_admin_dsn: str, tmp_path) -> None:
    """The scaling table's harness: two echo processes in one group (one_row checks every partition owned once by
    exactly two members) work through a backlog; the row names the busiest process."""
    from bench.scaling import one_row, render

    infra = h.Infra(test_kafka.bootstrap, pg_admin_dsn, "test", test_kafka)  # the credentials, on a secured broker
    dbs = h.Databases(infra)
    try:
        row = await one_row("echo", 2, 200, infra, dbs, tmp_path)
    finally:
        await dbs.drop_all()
    assert row["replicas"] == 2 and row["complete"] == 1.0 and row["steady_rate"] > 0
    assert {"echo #1", "echo #2", "kafka", "postgresql"} <= set(row["cpu"]) and row["busiest"] in row["cpu"]
    assert "| 2 " in render({"service": "echo", "events": 200, "rows": [row], "cpus": 2})
