"""Trust boundary: the hub e-mails only on requests read from notifications.requests (real Kafka, PostgreSQL, SMTP)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, free_port, running
from hub_devstack.smtp_sink import SmtpSink
from hub_notifications.main import build
from hub_notifications.settings import NotificationsSettings
from hub_schema import make_event, topics
from hub_schema.events.notifications import NotificationRequested, Recipient

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    s = SmtpSink(tmp_path / "mail", port=free_port())
    s.start()
    yield s
    s.stop()


def mail_request(email: str) -> tuple[uuid.UUID, object]:
    rid = uuid.uuid4()
    payload = NotificationRequested(request_id=rid, kind="subtask_update_failed", optional=False,
                                    recipient=Recipient(email=email, name=None, locale="en"),
                                    data={"task_name": "t", "task_id": "pt-1", "parent_task_name": "p", "project_name": "x"})
    return rid, make_event(payload, org_id="org-1", entity_key="org:org-1", producer="crm-ui", origin="crm")


@pytest.mark.attack("a CRM-UI producer publishes notification.requested onto hub.requests to make the hub e-mail any address",
                    outcome="notifications dead-letters it with code wrong_topic and sends no mail")
async def test_notification_request_on_hub_requests_sends_no_mail(hub_env: HubEnv, kafka_probe: KafkaProbe,
                                                                   sink: SmtpSink) -> None:
    settings = hub_env.settings(NotificationsSettings, "notifications", HUB_SMTP__PORT=str(sink.port))
    forged_id, forged = mail_request("victim@elsewhere.example")
    legit_id, legit = mail_request("taro@example.co.jp")
    async with running(build(settings)) as service:
        dead = await kafka_probe.reader(topics.DEAD_LETTERS)
        await kafka_probe.send(forged, topics.HUB_REQUESTS)  # type: ignore[arg-type]
        records = await kafka_probe.collect(dead, lambda rs: len(rs) >= 1)
        headers = {k: v.decode() for k, v in records[0].headers}
        assert headers["x-dlq-consumer"] == "notifications" and headers["x-dlq-code"] == "wrong_topic"
        await kafka_probe.send(legit)  # type: ignore[arg-type]
        for _ in range(300):
            if sink.files():
                break
            await asyncio.sleep(0.1)
        assert await service.pool.fetchval("SELECT count(*) FROM deliveries WHERE request_id = $1", forged_id) == 0
        assert await service.pool.fetchval("SELECT count(*) FROM deliveries WHERE request_id = $1", legit_id) == 1
    mails = sink.messages()
    assert [m["To"] for m in mails] == ["taro@example.co.jp"]
