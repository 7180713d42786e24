"""The linking batch state (issue 16) through the platform's BatchProcessor on the real database, without a broker
(records built by hand), so the composition of a batch can be chosen exactly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_linking import main
from hub_linking.handlers import router
from hub_platform import db
from hub_platform.consumer import BatchProcessor
from hub_schema import Event, encode, make_event, parse_event
from hub_schema.events import crm, identity, pm, requests
from hub_schema.events.common import PermissionProfile
from hub_schema.registry import Payload, topic_of
from hub_schema.topics import TopicNames

pytestmark = pytest.mark.integration

ORG = "org-1"
T0 = datetime(2024, 4, 1, 9, 0, tzinfo=timezone.utc)
PERMS = PermissionProfile(role="manager", permissions=["edit_project", "associate_project"])  # type: ignore[arg-type]


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


class Batches:
    def __init__(self, env: HubEnv, pool: asyncpg.Pool) -> None:
        self.topics = TopicNames(env.topic_prefix)
        self.pool = pool
        self.processor = BatchProcessor(pool, router, consumer="linking", producer="linking", topics=self.topics)
        self.offset = 0
        self.statements = 0

    async def process(self, *payloads: Payload) -> None:
        records = []
        for p in payloads:
            env = make_event(p, org_id=ORG, entity_key=f"k:{uuid.uuid4().hex[:6]}", producer="test", origin="crm")
            records.append(FakeRecord(self.topics(topic_of(env.event_type)), 0, self.offset, b"k", encode(env)))
            self.offset += 1
        await self.processor.process(records)

    async def emitted(self, event_type: str) -> list[Event[Any]]:
        rows = await self.pool.fetch("SELECT value FROM outbox ORDER BY id")
        return [e for e in (parse_event(r["value"]) for r in rows) if e.event_type == event_type]


@pytest.fixture
async def batches(hub_env: HubEnv):
    from hub_devstack.provision import provision_service

    dsn = await provision_service(hub_env.admin_dsn, hub_env.database, "linking", "linking")
    await db.migrate_async(dsn, "linking", main.MIGRATIONS)
    pool = await db.create_pool(dsn, "linking", min_size=1, max_size=1)
    b = Batches(hub_env, pool)
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda _: setattr(b, "statements", b.statements + 1))
    try:
        yield b
    finally:
        await pool.close()


def admin() -> identity.UserAccessChanged:
    return identity.UserAccessChanged(crm_user_id="u-admin", email="admin@example.com", name="Admin", locale="en",
                                      active=True, is_admin=True, portal_id="p-1", portal_user_id="pu-admin",
                                      profile=PERMS, effective_from=T0, revision=1)


def enable(by: str = "u-admin") -> requests.IntegrationEnable:
    return requests.IntegrationEnable(
        request_id=uuid.uuid4(), acting_user_id=by, portal_id="p-1", deal_won_creates_project=True,
        field_mapping=[requests.FieldMapping(pm_field="name", crm_module="deals", crm_field="Deal_Name")],
        permissions=PERMS)


def won(deal_id: str) -> crm.CrmDealUpserted:
    return crm.CrmDealUpserted(id=deal_id, name=f"Deal {deal_id}", account_id="acc-1", contact_ids=[], stage="Won",
                               amount=Decimal("10"), won=True, custom_fields={"Kind": "x"}, modified_at=T0, version=1)


def contact(contact_id: str) -> crm.CrmContactUpserted:
    return crm.CrmContactUpserted(id=contact_id, first_name="C", last_name=contact_id, account_id="acc-1",
                                  email=f"{contact_id}@example.com", modified_at=T0, version=1)


async def test_S14_a_request_reads_what_the_events_before_it_in_its_batch_wrote(batches: Batches) -> None:
    """Admin, portal and account arrive in the same batch as the enable and a won deal: the enable sees them, the
    deal sees the enable."""
    await batches.process(
        admin(), pm.PmPortalUpserted(id="p-1", name="Portal", plan="paid", active=True, modified_at=T0, version=1),  # type: ignore[arg-type]
        crm.CrmAccountUpserted(id="acc-1", name="Acme", modified_at=T0, version=1), enable(), won("d-1"))
    assert not await batches.emitted("linking.request.refused")
    assert len(await batches.emitted("linking.integration.changed")) == 1
    [create] = await batches.emitted("pm.project.create")
    assert create.payload.name == "Deal d-1"


async def test_a_refused_request_keeps_the_changes_of_the_events_before_it_in_its_batch(batches: Batches) -> None:
    """The refusal rolls back to its savepoint what the state had written through; the state's restore writes it
    again at the end of the batch."""
    await batches.process(admin(), contact("c-1"), enable(by="u-nobody"), contact("c-2"))
    [refusal] = await batches.emitted("linking.request.refused")
    assert refusal.payload.reason_code == "unknown_user"
    stored = await batches.pool.fetch("SELECT record_id FROM crm_records WHERE record_type = 'contact' ORDER BY 1")
    assert [r["record_id"] for r in stored] == ["c-1", "c-2"]
    assert await batches.pool.fetchval("SELECT count(*) FROM users") == 1


async def test_S14_won_deals_cost_the_same_statements_whatever_the_size_of_the_batch(batches: Batches) -> None:
    """Set-based: each table is read once and written once per batch, not once per event."""
    await batches.process(
        admin(), pm.PmPortalUpserted(id="p-1", name="Portal", plan="paid", active=True, modified_at=T0, version=1),  # type: ignore[arg-type]
        crm.CrmAccountUpserted(id="acc-1", name="Acme", modified_at=T0, version=1), enable(), won("seed"))
    per_batch = []
    for size, tag in ((20, "a"), (200, "b")):
        batches.statements = 0
        await batches.process(*(won(f"{tag}-{i}") for i in range(size)))
        per_batch.append(batches.statements)
    assert per_batch[0] == per_batch[1], per_batch
    assert len(await batches.emitted("pm.project.create")) == 221
    assert await batches.pool.fetchval("SELECT count(*) FROM deal_projects") == 221
    # the same deals won again (a replayed or later event with a newer version): no second project
    await batches.process(*(won(f"a-{i}").model_copy(update={"version": 2}) for i in range(20)))
    assert len(await batches.emitted("pm.project.create")) == 221
