"""Retention of the task decision history on the real database, with an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db
from hub_platform.retention import RetentionJob
from hub_tasks.main import MIGRATIONS, build
from hub_tasks.settings import TasksSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


async def test_decisions_older_than_their_age_are_pruned(hub_env: HubEnv) -> None:
    settings = hub_env.settings(TasksSettings, "tasks", HUB_RETENTION__TASK_DECISIONS_DAYS="180")
    service = build(settings)
    dsn = hub_env.dsns["tasks"]
    await db.migrate_async(dsn, "tasks", MIGRATIONS)
    pool = await db.create_pool(dsn, "tasks")
    try:
        for days in (181, 179, 3):
            await pool.execute("INSERT INTO task_decisions (org_id, side, decision, reason_code, reason, at) "
                               "VALUES ('org-1', 'pm', 'mirrored', 'changed', 'Taro changed it', $1)",
                               NOW - timedelta(days=days))
        job = RetentionJob(pool, service.retention_rules, settings.retention, clock=lambda: NOW)
        assert (await job.run_once())["task_decisions"] == 1
        assert await pool.fetchval("SELECT count(*) FROM task_decisions") == 2
        job.clock = lambda: NOW + timedelta(days=2)  # the 179-day-old row is now 181 days old
        assert (await job.run_once())["task_decisions"] == 1
        assert await pool.fetchval("SELECT count(*) FROM task_decisions") == 1
    finally:
        await pool.close()
