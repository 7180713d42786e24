"""The tasks batch state (issue 16): a batch costs the same statements whatever its size, and sees itself.

Driven through the platform's BatchProcessor on the real database without a broker (records built by hand), on
one connection whose statements are counted with asyncpg's query logger.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db
from hub_platform.consumer import BatchProcessor
from hub_schema import Envelope, Payload, encode, make_event
from hub_schema.events import identity, linking, pm
from hub_schema.events.common import PermissionProfile, RecordRef
from hub_schema.registry import topic_of
from hub_schema.topics import TopicNames

pytestmark = pytest.mark.integration

ORG, PORTAL = "org-b", "portal-b"
T0 = datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc)


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


class OneConnection:
    """What BatchProcessor needs of a pool, on one connection (so every statement it sends is counted)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        yield self.conn


@dataclass
class Counted:
    processor: BatchProcessor
    conn: asyncpg.Connection
    topics: TopicNames
    statements: list[str] = field(default_factory=list)
    offset: int = 0

    async def batch(self, envelopes: list[Envelope]) -> int:
        """Process one batch; how many statements it sent."""
        records = [FakeRecord(self.topics(topic_of(e.event_type)), 0, self.offset + i, b"k", encode(e))
                   for i, e in enumerate(envelopes)]
        self.offset += len(records)
        self.statements.clear()
        await self.processor.process(records)
        return len(self.statements)


@pytest.fixture
async def counted(hub_env: HubEnv) -> AsyncIterator[Counted]:
    from hub_devstack.provision import provision_service
    from hub_tasks.handlers import router
    from hub_tasks.main import MIGRATIONS

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "tasks", "tasks")
    await db.migrate_async(dsn, "tasks", MIGRATIONS)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "tasks"})
    await db._init_connection(conn)
    topics = TopicNames(hub_env.topic_prefix)
    c = Counted(BatchProcessor(OneConnection(conn), router, consumer="tasks", producer="tasks",  # type: ignore[arg-type]
                               topics=topics), conn, topics)
    conn.add_query_logger(lambda r: c.statements.append(r.query))
    try:
        yield c
    finally:
        await conn.close()


def ev(payload: Payload, key: str, origin: str = "hub") -> Envelope:
    return make_event(payload, org_id=ORG, entity_key=key, producer="test", origin=origin)  # type: ignore[arg-type]


def setup() -> list[Envelope]:
    return [
        ev(linking.IntegrationChanged(state="enabled", portal_id=PORTAL, changed_by="u-admin", changed_at=T0, revision=1),
           f"{ORG}:integration"),
        ev(linking.LinkChanged(portal_id=PORTAL, project_id="proj-1", record=RecordRef(record_type="deal", record_id="deal-1"),  # type: ignore[arg-type]
                               linked=True, revision=2), f"{ORG}:link"),
        ev(identity.UserAccessChanged(crm_user_id="u-1", email="u-1@example.com", name="User 1", locale="ja", active=True,
                                      is_admin=False, portal_id=PORTAL, portal_user_id="pu-1",
                                      profile=PermissionProfile(role="employee", permissions=["add_task"]),  # type: ignore[arg-type]
                                      effective_from=T0, revision=3), f"{ORG}:user:u-1"),
    ]


def flagged_task(task_id: str, version: int = 1, title: str | None = None) -> Envelope:
    p = pm.PmTaskUpserted(portal_id=PORTAL, project_id="proj-1", id=task_id, title=title or f"Task {task_id}",
                          description=None, due_date=date(2024, 5, 1), priority="medium", status="open", owner_id="pu-1",
                          recurring=False, add_to_crm=True, modified_at=datetime.now(timezone.utc), version=version)
    return ev(p, f"task:{task_id}", "pm")


async def commands(conn: asyncpg.Connection, kind: str) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT value FROM outbox WHERE topic LIKE '%crm.commands'")
    found = [json.loads(r["value"]) for r in rows]
    return [f for f in found if f["event_type"] == kind]


async def test_a_batch_of_new_flagged_tasks_costs_the_same_statements_whatever_its_size(counted: Counted) -> None:
    await counted.batch(setup())
    tag = uuid.uuid4().hex[:6]
    # asyncpg introspects a type the first time a statement uses it (the outbox's and the state's arrays): one warm-up
    await counted.batch([flagged_task(f"w-{tag}-{i}") for i in range(2)])
    small = await counted.batch([flagged_task(f"s-{tag}-{i}") for i in range(5)])
    large = await counted.batch([flagged_task(f"l-{tag}-{i}") for i in range(50)])
    assert small == large, "set-based: the statements of a batch do not grow with its events"
    reads = [q for q in counted.statements if q.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and reads[0].startswith("SELECT ARRAY("), f"the state's loads are one round trip: {reads}"
    creates = await commands(counted.conn, "crm.task.create")
    assert len(creates) == 57
    assert {c["payload"]["owner_id"] for c in creates} == {"u-1"}
    assert await counted.conn.fetchval("SELECT count(*) FROM task_mappings WHERE org_id = $1", ORG) == 57
    decided = await counted.conn.fetch("SELECT pm_task_id FROM task_decisions WHERE reason_code = 'created' ORDER BY id")
    assert [d["pm_task_id"] for d in decided][7:] == [f"l-{tag}-{i}" for i in range(50)], "history in record order"


async def test_a_batch_sees_what_the_events_before_it_changed(counted: Counted) -> None:
    """Setup and tasks in one batch: the tasks see the integration, link and user set up just before them; a
    second copy of a task in the same batch is stale, a newer one updates the mapping the first created."""
    first, same, newer = flagged_task("t-1"), flagged_task("t-1"), flagged_task("t-1", version=2, title="Renamed")
    await counted.batch([*setup(), first, same, newer])
    assert len(await commands(counted.conn, "crm.task.create")) == 1
    codes = [r["reason_code"] for r in await counted.conn.fetch(
        "SELECT reason_code FROM task_decisions WHERE pm_task_id = 't-1' ORDER BY id")]
    assert codes[:2] == ["created", "stale"]
    [m] = await counted.conn.fetch("SELECT state, pm_version FROM task_mappings WHERE pm_task_id = 't-1'")
    assert m["pm_version"] == 2 and m["state"]["pm_seen"]["title"] == "Renamed"
    assert await counted.conn.fetchval("SELECT version FROM pm_tasks WHERE task_id = 't-1'") == 2
