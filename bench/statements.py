"""SQL statements per batch of 500 on the hot paths, counted with asyncpg's query logger (`python -m bench.statements`).

Why: a service's cost is its database round trips, and a set-based service (issue 16) sends a fixed number of
statements per *batch*, whatever its size; per event that would read as a fraction. So each path runs the way the
service really runs: records of `HUB_BENCH_STMT_BATCH` (default 500) events handed to the platform's
`BatchProcessor` with the service's `router` and its migrations (only those public entry points, so it works
whatever shape the handlers take), on a pool of one connection, one transaction per batch.

Columns: every statement the batch sent (transaction control, inbox, outbox and the service's own: its state
load, handlers and flush), the service's own among them, and whether the batch stayed on the optimistic path
(no savepoint: no handler raised). A pipelined `executemany` is logged once by asyncpg, so it counts as one.

Paths: echo (the platform's reference), tasks S5 create (flagged PM task on a linked project ->
crm.task.create), the CRM echo binding it, an update of the mirrored task from the PM side and from the CRM
side; linking S14 deal won -> pm.project.create.

Servers: HUB_BENCH_PG_ADMIN_DSN, else HUB_TEST_PG_ADMIN_DSN, else the bench's usual lookup.
HUB_BENCH_STMT_BATCHES (default 2) batches per path; HUB_BENCH_STMT_VERBOSE=1 prints the statements.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from bench import harness as h
from bench.scenarios import ECHO, LINKING, ORG, PAD, PORTAL, TASKS, Scenario, new_tag

UTC = timezone.utc
CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
PLATFORM = ("INSERT INTO inbox", "INSERT INTO outbox", "WITH written AS (INSERT INTO outbox", "INSERT INTO dead_letter_log")
INTROSPECTION = ("WITH RECURSIVE typeinfo_tree", "SELECT current_setting('jit')", "SELECT set_config('jit'")
"""asyncpg's own look-ups of a type it meets the first time on a connection: not the service's, not per batch."""


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


@dataclass(eq=False)  # hashable: asyncpg keeps its query loggers in a set
class Counter:
    """Every statement the connection sent, by its first 110 characters (the pool's reset on release and asyncpg's
    type introspection left out)."""

    reset_query: str = ""
    texts: dict[str, int] = field(default_factory=dict)

    def __call__(self, record: Any) -> None:
        q = " ".join(record.query.split())[:110]
        if (self.reset_query and record.query == self.reset_query) or q.startswith(INTROSPECTION):
            return
        self.texts[q] = self.texts.get(q, 0) + 1

    def total(self) -> int:
        return sum(self.texts.values())

    def own(self) -> int:
        return sum(n for q, n in self.texts.items() if not q.upper().startswith(CONTROL) and not q.startswith(PLATFORM))

    def careful(self) -> bool:
        return any(q.upper().startswith("SAVEPOINT") for q in self.texts)


@dataclass
class PathResult:
    per_batch: float
    own_per_batch: float
    batch: int
    optimistic: bool
    rate: float
    texts: dict[str, int]


class Runner:
    """One service's router behind a BatchProcessor on a one-connection pool with a query logger."""

    def __init__(self, sc: Scenario, dsn: str, batch: int) -> None:
        self.sc = sc
        self.dsn = dsn
        self.batch = batch
        self.offset = 0
        self.counter = Counter()

    async def __aenter__(self) -> Runner:
        from hub_platform import db
        from hub_platform.consumer import BatchProcessor
        from hub_schema.topics import TopicNames

        self.router, migrations = self.sc.load()
        await db.migrate_async(self.dsn, self.sc.service, migrations)
        self.pool = await db.create_pool(self.dsn, self.sc.service, min_size=1, max_size=1)
        self.topics = TopicNames(f"benchstmt{new_tag()}.")
        self.processor = BatchProcessor(self.pool, self.router, consumer=self.sc.service, producer=self.sc.service,
                                        topics=self.topics)
        async with self.pool.acquire() as conn:
            self.counter.reset_query = conn.get_reset_query()  # what the pool sends on each release
            conn.add_query_logger(self.counter)  # stays on the pool's one connection
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.pool.close()

    def records(self, envelopes: list[Any]) -> list[FakeRecord]:
        from hub_schema import encode
        from hub_schema.registry import topic_of

        out = []
        for env in envelopes:
            out.append(FakeRecord(self.topics(topic_of(env.event_type)), 0, self.offset, env.entity_key.encode(), encode(env)))
            self.offset += 1
        return out

    async def seed(self, envelopes: list[Any]) -> None:
        """In order; a None splits the seeds into batches (what comes after needs what came before)."""
        part: list[Any] = []
        for env in [*envelopes, None]:
            if env is None:
                if part:
                    await self.processor.process(self.records(part))
                part = []
            else:
                part.append(env)

    async def path(self, envelopes: list[Any]) -> PathResult:
        """Statements per batch over `envelopes` handled in batches of `self.batch`."""
        await asyncio.sleep(0)  # query loggers are called soon after the statement: let the seeds' calls land
        self.counter.texts.clear()
        batches = [envelopes[i:i + self.batch] for i in range(0, len(envelopes), self.batch)]
        t0 = time.perf_counter()
        for b in batches:
            await self.processor.process(self.records(b))
        rate = len(envelopes) / (time.perf_counter() - t0)
        await asyncio.sleep(0)
        n = len(batches)
        return PathResult(self.counter.total() / n, self.counter.own() / n, self.batch, not self.counter.careful(), rate,
                          dict(self.counter.texts))

    async def emitted(self, event_type: str) -> list[dict[str, Any]]:
        """The envelopes the service wrote to its outbox with this type (the platform's table, not the service's)."""
        rows = await self.pool.fetch("SELECT value FROM outbox ORDER BY id")
        envs = [json.loads(bytes(r["value"])) for r in rows]
        return [e for e in envs if e.get("event_type") == event_type]


def ev(payload: Any, key: str, origin: str) -> Any:
    from hub_schema import make_event

    return make_event(payload, org_id=ORG, entity_key=key, producer="bench", origin=origin)  # type: ignore[arg-type]


async def echo_paths(dsn: str, n: int, batch: int) -> dict[str, PathResult]:
    async with Runner(ECHO, dsn, batch) as r:
        tag = new_tag()
        return {"echo: diag.ping -> echo_pings row + diag.pong": await r.path([ECHO.event(i, tag) for i in range(n)])}


async def tasks_paths(dsn: str, n: int, batch: int) -> dict[str, PathResult]:
    from hub_schema.events import crm, pm

    out: dict[str, PathResult] = {}
    async with Runner(TASKS, dsn, batch) as r:
        await r.seed(TASKS.seeds())
        tag = new_tag()
        creates = [TASKS.event(i, tag) for i in range(n)]
        out["tasks: pm.task.upserted, new flagged task -> crm.task.create"] = await r.path(creates)
        pm_task_of = {str(e.event_id): e.payload["id"] for e in creates}
        commands = [(c, pm_task_of[c["causation_id"]]) for c in await r.emitted("crm.task.create")
                    if c["causation_id"] in pm_task_of]
        echoes, pm_updates, crm_updates = [], [], []
        for c, pm_task_id in commands:
            p = c["payload"]
            crm_id = f"ct-{p['hub_task_id']}"
            echoes.append(ev(crm.CrmTaskUpserted(
                id=crm_id, record_type=p["record_type"], record_id=p["record_id"], subject=p["subject"],
                description=p["description"], due_date=date.fromisoformat(p["due_date"]) if p.get("due_date") else None, priority=p["priority"],
                status=p["status"], owner_id="u-1", created_by="u-1", modified_at=datetime.now(UTC), version=1,
                command_id=uuid.UUID(p["command_id"])), f"task:{crm_id}", "crm"))
            pm_updates.append(ev(pm.PmTaskUpserted(
                portal_id=PORTAL, project_id="proj-1", id=pm_task_id, title=f"Renamed {pm_task_id}", description=PAD,
                due_date=date(2024, 5, 1), priority="medium", status="open", owner_id="pu-1", recurring=False,
                add_to_crm=True, modified_at=datetime.now(UTC), version=2, acting_user_id="pu-1"), f"task:{pm_task_id}", "pm"))
            crm_updates.append(ev(crm.CrmTaskUpserted(
                id=crm_id, record_type=p["record_type"], record_id=p["record_id"], subject=f"Renamed again {pm_task_id}",
                description=PAD, due_date=date(2024, 6, 1), priority="high", status="open", owner_id="u-1",
                created_by="u-1", modified_at=datetime.now(UTC), version=3, acting_user_id="u-1"), f"task:{crm_id}", "crm"))
        if len(commands) < n:
            print(f"tasks: only {len(commands)} of {n} creates emitted crm.task.create; the later paths use those")
        out["tasks: crm.task.upserted, echo of the create (binds the CRM id)"] = await r.path(echoes)
        out["tasks: pm.task.upserted, update of a mirrored task -> crm.task.update"] = await r.path(pm_updates)
        out["tasks: crm.task.upserted, update of a mirrored task -> pm.task.update"] = await r.path(crm_updates)
    return out


async def linking_paths(dsn: str, n: int, batch: int) -> dict[str, PathResult]:
    async with Runner(LINKING, dsn, batch) as r:
        await r.seed(LINKING.seeds())
        tag = new_tag()
        return {"linking: crm.deal.upserted, won -> pm.project.create": await r.path([LINKING.event(i, tag) for i in range(n)])}


def render(res: dict[str, PathResult]) -> str:
    rows = [[k, str(v.batch), f"{v.per_batch:.0f}", f"{v.own_per_batch:.0f}", f"{v.own_per_batch / v.batch:.3f}",
             "yes" if v.optimistic else "no (savepoints)", h.fmt_rate(v.rate)] for k, v in res.items()]
    return h.table(rows, ["path", "batch", "statements/batch", "service's own/batch", "own per event",
                          "optimistic", "events/s"])


async def amain() -> dict[str, PathResult]:
    admin = os.environ.get("HUB_BENCH_PG_ADMIN_DSN") or os.environ.get("HUB_TEST_PG_ADMIN_DSN") or h.find_infra().admin_dsn
    batch = int(os.environ.get("HUB_BENCH_STMT_BATCH", "500"))
    n = batch * int(os.environ.get("HUB_BENCH_STMT_BATCHES", "2"))
    only = [s.strip() for s in os.environ.get("HUB_BENCH_STMT_SERVICES", "echo,tasks,linking").split(",") if s.strip()]
    dbs = h.Databases(h.Infra("", admin, "statements"))
    res: dict[str, PathResult] = {}
    try:
        _, dsns = await dbs.create(only, "stmt" + uuid.uuid4().hex[:4])
        for name, paths in (("echo", echo_paths), ("tasks", tasks_paths), ("linking", linking_paths)):
            if name in only:
                res.update(await paths(dsns[name], n, batch))
    finally:
        await dbs.drop_all()
    return res


def main() -> None:
    res = asyncio.run(amain())
    print(render(res))
    if os.environ.get("HUB_BENCH_STMT_VERBOSE"):
        for k, v in res.items():
            print(f"\n{k}:")
            for q, c in sorted(v.texts.items(), key=lambda x: -x[1]):
                print(f"  {c:>6}  {q}")


if __name__ == "__main__":
    main()
