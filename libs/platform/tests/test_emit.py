"""Emitting outside a handler (an HTTP request): the outbox row is written in the caller's transaction, stamped
with the service as producer, the org and the caller's correlation id, and the relay is woken only after a commit."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db, echo
from hub_platform.emit import correlation_id_of, emitting
from hub_schema import parse_event
from hub_schema.events.diagnostics import DiagPing
from hub_schema.topics import TopicNames

pytestmark = pytest.mark.integration


class Relay:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


@pytest.fixture
async def service(hub_env: HubEnv):  # type: ignore[no-untyped-def]
    from hub_devstack.provision import provision_service

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "echo", "echo")
    await db.migrate_async(dsn, "echo", Path(echo.__file__).parent / "echo_migrations")
    pool = await db.create_pool(dsn, "echo")
    try:
        yield SimpleNamespace(pool=pool, name="echo", topics=TopicNames("t."), relay=Relay())
    finally:
        await pool.close()


async def outbox(service: Any) -> list[Any]:
    return await service.pool.fetch("SELECT topic, key, value FROM outbox ORDER BY id")


async def test_an_event_emitted_by_a_request_is_in_the_outbox_with_its_stamp(service: Any) -> None:
    correlation = uuid.uuid4()
    assert correlation_id_of({"x-correlation-id": str(correlation)}) == correlation
    assert correlation_id_of({"x-correlation-id": "not-a-uuid"}) is None
    async with emitting(service, correlation_id=correlation) as out:
        sent = await out.emit(DiagPing(seq=1), org_id="org-1", entity_key="org-1:ping")
    [row] = await outbox(service)
    event = parse_event(row["value"]).envelope
    assert (row["topic"], row["key"]) == ("t." + DiagPing.TOPIC, "org-1:ping")
    assert (event.event_id, event.producer, event.org_id, event.correlation_id, event.origin) == (
        sent.event_id, "echo", "org-1", correlation, "hub")
    assert service.relay.woken == 1


async def test_a_request_that_fails_leaves_no_event_and_does_not_wake_the_relay(service: Any) -> None:
    with pytest.raises(RuntimeError):
        async with emitting(service) as out:
            await out.emit(DiagPing(seq=2), org_id="org-1", entity_key="org-1:ping")
            raise RuntimeError("the state change failed after the emit")
    assert await outbox(service) == []
    assert service.relay.woken == 0
