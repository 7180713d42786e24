"""Retention of the platform's tables (inbox, dead-letter log) on the real database, with an injected clock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, running
from hub_platform import db, echo
from hub_platform.retention import PLATFORM_RULES, RetentionJob
from hub_platform.settings import RetentionSettings
from hub_schema import make_event, topics
from hub_schema.events.diagnostics import DiagPing

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


async def echo_pool(env: HubEnv):  # type: ignore[no-untyped-def]
    from hub_devstack.provision import provision_service

    env.dsns["echo"] = await provision_service(env.admin_dsn, env.database, "echo", "echo")
    await db.migrate_async(env.dsns["echo"], "echo", Path(echo.__file__).parent / "echo_migrations")
    return await db.create_pool(env.dsns["echo"], "echo")


async def test_rows_older_than_their_table_age_are_pruned_and_younger_ones_kept(hub_env: HubEnv) -> None:
    pool = await echo_pool(hub_env)
    try:
        ages = {"inbox": [31, 29, 1], "dead_letter_log": [8, 6]}
        for days in ages["inbox"]:
            await pool.execute("INSERT INTO inbox (consumer, event_id, event_type, processed_at) VALUES ('echo', $1, 'x', $2)",
                               uuid.uuid4(), NOW - timedelta(days=days))
        for offset, days in enumerate(ages["dead_letter_log"]):
            await pool.execute('INSERT INTO dead_letter_log (consumer, topic, "partition", "offset", code, reason, '
                               "dead_lettered_at) VALUES ('echo', 't', 0, $1, 'c', 'r', $2)", offset, NOW - timedelta(days=days))
        settings = RetentionSettings(inbox_days=30, dead_letter_log_days=7, batch=1)  # batch 1: the loop runs
        deleted = await RetentionJob(pool, PLATFORM_RULES, settings, clock=lambda: NOW).run_once()
        assert deleted == {"inbox": 1, "dead_letter_log": 1}
        left = sorted(round((NOW - r["processed_at"]).total_seconds() / 86400) for r in await pool.fetch("SELECT * FROM inbox"))
        assert left == [1, 29]
        assert await pool.fetchval("SELECT count(*) FROM dead_letter_log") == 1
        # a day later the 29-day-old row is still young enough, two days later it goes
        later = await RetentionJob(pool, PLATFORM_RULES, settings, clock=lambda: NOW + timedelta(days=2)).run_once()
        assert later["inbox"] == 1
        # age 0 keeps rows for ever
        none = await RetentionJob(pool, PLATFORM_RULES, RetentionSettings(inbox_days=0, dead_letter_log_days=0),
                                  clock=lambda: NOW + timedelta(days=3650)).run_once()
        assert none == {} and await pool.fetchval("SELECT count(*) FROM inbox") == 1
    finally:
        await pool.close()


async def test_every_service_runs_the_job(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    """A HubService whose clock says 31 days have passed prunes the inbox row of the ping it just handled."""
    from hub_devstack.provision import provision_service

    hub_env.dsns["echo"] = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    settings = hub_env.settings(echo.EchoSettings, "echo", HUB_RETENTION__INTERVAL_SECONDS="0.2")
    service = echo.build(settings)
    service.clock = lambda: datetime.now(timezone.utc) + timedelta(days=31)
    async with running(service):
        out = await kafka_probe.reader(topics.TASKS_EVENTS)
        await kafka_probe.send(make_event(DiagPing(seq=1), org_id="org-1", entity_key="diag:1", producer="test",
                                          origin="crm"))
        await kafka_probe.collect(out, lambda rs: len(rs) >= 1)
        assert service.pool is not None
        for _ in range(300):
            if await service.pool.fetchval("SELECT count(*) FROM inbox") == 0:
                break
            await asyncio.sleep(0.1)
        assert await service.pool.fetchval("SELECT count(*) FROM inbox") == 0
        assert await service.pool.fetchval("SELECT count(*) FROM echo_pings") == 1, "only the listed tables are pruned"
