"""SQL statements per event on the hot paths, counted with asyncpg's query logger (`python -m bench.statements`).

Why: the services' per-event cost is dominated by database round trips, so the
number of statements a handler sends is the figure to drive down. Each event
runs as the direct-database baseline runs it (inbox insert + handler, one
transaction per event, one connection); the inbox insert is counted apart.
Paths: tasks S5 create (flagged PM task on a linked project -> crm.task.create),
the CRM echo binding it, an update of the mirrored task from the PM side and
from the CRM side; linking S14 deal won -> pm.project.create.

Servers: HUB_BENCH_PG_ADMIN_DSN, else HUB_TEST_PG_ADMIN_DSN, else the bench's
usual lookup. HUB_BENCH_STMT_EVENTS (default 300) events per path.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import date, datetime, timezone
from typing import Any

from bench import harness as h
from bench.scenarios import LINKING, ORG, PAD, PORTAL, TASKS, new_tag

UTC = timezone.utc


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.texts: dict[str, int] = {}

    def __call__(self, record: Any) -> None:
        self.n += 1
        q = " ".join(record.query.split())[:110]
        self.texts[q] = self.texts.get(q, 0) + 1


async def run_events(conn: Any, router: Any, service: str, events: list[Any], counter: Counter) -> tuple[float, float]:
    """(statements per event excluding the inbox insert, events/s)."""
    from hub_platform.consumer import HandlerContext
    from hub_schema.topics import TopicNames

    topics = TopicNames(f"benchstmt{new_tag()}.")
    counter.n = 0
    counter.texts.clear()
    t0 = time.perf_counter()
    for event in events:
        async with conn.transaction():
            await conn.fetchval("INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) "
                                "ON CONFLICT DO NOTHING RETURNING true", service, event.event_id, event.event_type)
            ctx = HandlerContext(conn=conn, event=event, consumer=service, producer=service, topics=topics, outbox=[])
            await router.handlers[event.event_type](ctx, event)
    rate = len(events) / (time.perf_counter() - t0)
    # per event: BEGIN + inbox insert + COMMIT are not the handler's (asyncpg logs BEGIN/COMMIT as queries too)
    per = counter.n / len(events) - 3
    return per, rate


def parsed(env: Any) -> Any:
    from hub_schema import encode, parse_event

    return parse_event(encode(env))


async def tasks_paths(dsn: str, n: int, verbose: bool) -> dict[str, tuple[float, float]]:
    from hub_platform import db
    from hub_schema import make_event
    from hub_schema.events import crm, pm

    router, migrations = TASKS.load()
    await db.migrate_async(dsn, "tasks", migrations)
    pool = await db.create_pool(dsn, "tasks", min_size=1, max_size=1)
    out: dict[str, tuple[float, float]] = {}
    try:
        async with pool.acquire() as conn:
            counter = Counter()
            conn.add_query_logger(counter)
            await run_events(conn, router, "tasks", [parsed(e) for e in TASKS.seeds()], counter)
            tag = new_tag()
            creates = [parsed(TASKS.event(i, tag)) for i in range(n)]
            out["tasks: pm.task.upserted, new flagged task -> crm.task.create"] = await run_events(
                conn, router, "tasks", creates, counter)
            if verbose:
                print(counter.texts)
            rows = await conn.fetch("SELECT c.command_id, m.hub_task_id, m.pm_task_id FROM task_commands c "
                                    "JOIN task_mappings m USING (hub_task_id) WHERE m.pm_task_id LIKE $1", f"bt-{tag}-%")
            echoes = []
            for r in rows:
                p = crm.CrmTaskUpserted(id=f"ct-{r['pm_task_id']}", record_type="deal", record_id="deal-1",
                                        subject=f"Bench task {r['pm_task_id'].rsplit('-', 1)[1]}", description=PAD,
                                        due_date=date(2024, 5, 1), priority="medium", status="open", owner_id="u-1",
                                        created_by="u-1", modified_at=datetime.now(UTC), version=1,
                                        command_id=r["command_id"])
                echoes.append(parsed(make_event(p, org_id=ORG, entity_key=f"task:{p.id}", producer="bench", origin="crm")))
            out["tasks: crm.task.upserted, echo of the create (binds the CRM id)"] = await run_events(
                conn, router, "tasks", echoes, counter)
            pm_updates = []
            for r in rows:
                i = r["pm_task_id"].rsplit("-", 1)[1]
                p2 = pm.PmTaskUpserted(portal_id=PORTAL, project_id="proj-1", id=r["pm_task_id"], title=f"Renamed {i}",
                                       description=PAD, due_date=date(2024, 5, 1), priority="medium", status="open",
                                       owner_id="pu-1", recurring=False, add_to_crm=True, modified_at=datetime.now(UTC),
                                       version=2, acting_user_id="pu-1")
                pm_updates.append(parsed(make_event(p2, org_id=ORG, entity_key=f"task:{p2.id}", producer="bench",
                                                    origin="pm")))
            out["tasks: pm.task.upserted, update of a mirrored task -> crm.task.update"] = await run_events(
                conn, router, "tasks", pm_updates, counter)
            if verbose:
                print(counter.texts)
            crm_updates = []
            for r in rows:
                p3 = crm.CrmTaskUpserted(id=f"ct-{r['pm_task_id']}", record_type="deal", record_id="deal-1",
                                         subject=f"Renamed {r['pm_task_id']}", description=PAD, due_date=date(2024, 6, 1),
                                         priority="high", status="open", owner_id="u-1", created_by="u-1",
                                         modified_at=datetime.now(UTC), version=3, acting_user_id="u-1")
                crm_updates.append(parsed(make_event(p3, org_id=ORG, entity_key=f"task:{p3.id}", producer="bench",
                                                     origin="crm")))
            out["tasks: crm.task.upserted, update of a mirrored task -> pm.task.update"] = await run_events(
                conn, router, "tasks", crm_updates, counter)
            if verbose:
                print(counter.texts)
    finally:
        await pool.close()
    return out


async def linking_paths(dsn: str, n: int, verbose: bool) -> dict[str, tuple[float, float]]:
    from hub_platform import db

    router, migrations = LINKING.load()
    await db.migrate_async(dsn, "linking", migrations)
    pool = await db.create_pool(dsn, "linking", min_size=1, max_size=1)
    out: dict[str, tuple[float, float]] = {}
    try:
        async with pool.acquire() as conn:
            counter = Counter()
            conn.add_query_logger(counter)
            await run_events(conn, router, "linking", [parsed(e) for e in LINKING.seeds() if e is not None], counter)
            tag = new_tag()
            events = [parsed(LINKING.event(i, tag)) for i in range(n)]
            out["linking: crm.deal.upserted, won -> pm.project.create"] = await run_events(
                conn, router, "linking", events, counter)
            if verbose:
                print(counter.texts)
    finally:
        await pool.close()
    return out


async def amain() -> None:
    admin = os.environ.get("HUB_BENCH_PG_ADMIN_DSN") or os.environ.get("HUB_TEST_PG_ADMIN_DSN") or h.find_infra().admin_dsn
    n = int(os.environ.get("HUB_BENCH_STMT_EVENTS", "300"))
    verbose = bool(os.environ.get("HUB_BENCH_STMT_VERBOSE"))
    dbs = h.Databases(h.Infra("", admin, "statements"))
    try:
        _, dsns = await dbs.create(["tasks", "linking"], "stmt" + uuid.uuid4().hex[:4])
        res = await tasks_paths(dsns["tasks"], n, verbose)
        res.update(await linking_paths(dsns["linking"], n, verbose))
    finally:
        await dbs.drop_all()
    print(f"{'path':<75} {'stmts/event':>11} {'events/s':>9}")
    for k, (per, rate) in res.items():
        print(f"{k:<75} {per:>11.2f} {rate:>9.0f}")


if __name__ == "__main__":
    asyncio.run(amain())
