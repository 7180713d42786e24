"""Retention of the delivery log (rendered mails, .xlsx attachments, addresses) on the real database, with a clock."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_notifications.main import MIGRATIONS, build
from hub_notifications.settings import NotificationsSettings
from hub_platform import db
from hub_platform.retention import RetentionJob

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


async def test_finished_deliveries_older_than_their_age_are_pruned_pending_ones_never(hub_env: HubEnv) -> None:
    settings = hub_env.settings(NotificationsSettings, "notifications", HUB_RETENTION__DELIVERIES_DAYS="90")
    service = build(settings)
    dsn = hub_env.dsns["notifications"]
    await db.migrate_async(dsn, "notifications", MIGRATIONS)
    pool = await db.create_pool(dsn, "notifications")
    try:
        rows = {("sent", 91), ("failed", 120), ("suppressed", 95), ("sent", 89), ("pending", 200), ("sending", 200)}
        for state, days in rows:
            await pool.execute(
                "INSERT INTO deliveries (request_id, org_id, kind, optional, recipient_email, recipient_name, locale, "
                "state, message_id, body_text, attachment, request_event_id, correlation_id, origin, entity_key, "
                "created_at, updated_at) VALUES ($1, 'org-1', 'k', false, 'taro@example.jp', 'Taro', 'ja', $2, 'm', "
                "'rendered mail', '\\x00'::bytea, $1, $1, 'hub', 'e', $3, $3)",
                uuid.uuid4(), state, NOW - timedelta(days=days))
        deleted = await RetentionJob(pool, service.retention_rules, settings.retention, clock=lambda: NOW).run_once()
        assert deleted["deliveries"] == 3
        left = sorted((r["state"], round((NOW - r["updated_at"]).total_seconds() / 86400))
                      for r in await pool.fetch("SELECT state, updated_at FROM deliveries"))
        assert left == [("pending", 200), ("sending", 200), ("sent", 89)], "mails not yet sent are never pruned"
    finally:
        await pool.close()
