"""The fault suite: a steady stream of mixed events through the real local stack while services,
the broker and the database are killed and restarted; then exactly-once effects are checked.

Short run (part of `make test`, ~2 minutes): a few kills, one broker restart, one PostgreSQL
restart, every kind of bad input. Long run (`make faults`, marked slow): more events and kills,
configurable with HUB_FAULTS_EVENTS (minimum events sent) and HUB_FAULTS_KILLS (service kills).
Both print their figures and write docs/faults/LAST_RUN.md.

Subjects: the platform's echo service (diag.ping -> echo_pings row + diag.pong), which runs the
same inbox / outbox / relay / dead-letter machinery as every hub service and whose effects can be
counted exactly; the real tasks service (flagged PM task -> exactly one crm.task.create); the real
notifications service (request -> exactly one e-mail through the SMTP sink). See README.md here.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from pathlib import Path

import asyncpg
import pytest

from faultkit import (
    Figures, Infra, LagProbe, OwnershipWatch, PingTraffic, Producer, Recovery, ServiceProc, Supervisor, Watcher, assert_clean,
    check_echo, check_notifications, check_tasks, conclude, echo_service, inject, negative_controls,
    notifications_service, now, stop_everything, tasks_service,
)
from hub_schema import topics

RECOVERY_TIMEOUT = 120.0
GROUPS = {"echo": [topics.CRM_INGEST], "notifications": [topics.NOTIFICATION_REQUESTS, topics.HUB_REQUESTS],
          "tasks": [topics.PM_INGEST, topics.CRM_INGEST, topics.LINKING_EVENTS, topics.IDENTITY_EVENTS]}
OUTPUT = {"echo": topics.TASKS_EVENTS, "notifications": topics.NOTIFICATION_OUTCOMES, "tasks": topics.CRM_COMMANDS}
CONSUMERS = {topics.CRM_INGEST: {"echo", "tasks"}, topics.NOTIFICATION_REQUESTS: {"notifications"}}


async def tasks_setup(infra: Infra, producer: Producer) -> None:
    """Integration enabled for org-1 with portal-1, proj-1 linked to deal-1, u-1 = pu-1 may add tasks."""
    from datetime import datetime, timezone

    from hub_schema import encode, make_event
    from hub_schema.events import identity, linking, pm
    from hub_schema.events.common import PermissionProfile, RecordRef

    t0 = datetime(2024, 4, 1, tzinfo=timezone.utc)
    events = [
        (linking.IntegrationChanged(state="enabled", portal_id="portal-1", changed_by="u-admin", changed_at=t0, revision=1),
         "hub", "org-1:integration"),
        (pm.PmProjectUpserted(portal_id="portal-1", id="proj-1", name="proj-1", owner_id="pu-1", status="active",
                              progress_percent=0, schedule_fixed=False, modified_at=t0, version=1), "pm", "project:proj-1"),
        (linking.LinkChanged(portal_id="portal-1", project_id="proj-1", record=RecordRef(record_type="deal", record_id="deal-1"),
                             linked=True, revision=2), "hub", "org-1:link"),
        (identity.UserAccessChanged(crm_user_id="u-1", email="u-1@example.com", name="User 1", locale="ja", active=True,
                                    is_admin=False, portal_id="portal-1", portal_user_id="pu-1",
                                    profile=PermissionProfile(role="employee", permissions=["add_task"]),
                                    effective_from=t0, revision=3), "hub", "org-1:user:u-1"),
    ]
    for payload, origin, key in events:
        env = make_event(payload, org_id="org-1", entity_key=key, producer="faults", origin=origin)  # type: ignore[arg-type]
        await producer.send(type(payload).TOPIC, encode(env), key)
    deadline = now() + 60
    while now() < deadline:
        conn = await asyncpg.connect(infra.admin_dsn)
        try:
            if await conn.fetchval("SELECT count(*) FROM tasks.inbox") >= len(events):
                return
        finally:
            await conn.close()
        await asyncio.sleep(0.2)
    raise AssertionError("the tasks service did not take the set-up events")


async def run_suite(mode: str, *, min_events: int, rate: float, plan: list[str], controls: bool = False) -> Figures:
    figures = Figures(mode=mode)
    started = now()
    # Not under pytest's tmp_path: every pytest session on this machine resets /tmp/pytest-of-<user> to
    # 0700, which locks the PostgreSQL server (it runs as another user when we are root) out of its data
    # directory at the next restart.
    tmp = Path(tempfile.mkdtemp(prefix=f"hub-faults-{mode}-"))
    os.chmod(tmp, 0o755)
    infra = Infra(tmp)
    logdir = tmp / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    services: dict[str, ServiceProc] = {}
    watcher: Watcher | None = None
    ownership: OwnershipWatch | None = None
    traffic_task: asyncio.Task[None] | None = None
    producer: Producer | None = None
    supervisor_task: asyncio.Task[None] | None = None
    try:
        await infra.start()
        services = {"echo": echo_service(infra, logdir), "notifications": notifications_service(infra, logdir),
                    "tasks": tasks_service(infra, logdir)}
        for svc in services.values():
            svc.start()
        for svc in services.values():
            await svc.wait_ready(90)
        # a replica whose offset commit never returned exits for a restart (seen after a broker restart): restarted
        # as its platform's supervisor would; without it, that service sat out the rest of the run
        supervisor = Supervisor(services)
        supervisor_task = asyncio.create_task(supervisor.run())
        watcher = Watcher(infra.bootstrap, [topics.TASKS_EVENTS, topics.NOTIFICATION_OUTCOMES, topics.CRM_COMMANDS])
        await watcher.start()
        ownership = OwnershipWatch(infra.bootstrap, GROUPS)
        await ownership.start()
        producer = Producer(infra.bootstrap)
        await tasks_setup(infra, producer)
        traffic = PingTraffic(producer, total=10**9, rate=rate, notify_every=8, tasks_every=8, consumers=CONSUMERS)
        traffic_task = asyncio.create_task(traffic.run())
        lag = LagProbe(infra.bootstrap)

        baseline = 0
        for _ in range(12):  # warm-up: what lag is normal under this load
            await asyncio.sleep(0.25)
            for group, ts in GROUPS.items():
                baseline = max(baseline, await lag.lag(group, ts) or 0)
        recovery = Recovery(lag, watcher, list(services.values()), GROUPS, normal_lag=max(30, 3 * baseline),
                            output_topic=topics.TASKS_EVENTS)
        rnd = random.Random(11)
        for step in plan:  # "a+b": faults injected at the same moment (different services)
            injected = await asyncio.gather(*(inject(f, infra, services, rnd, OUTPUT) for f in step.split("+")))
            await asyncio.gather(*(recovery.wait(rec, RECOVERY_TIMEOUT, output) for rec, output in injected))
            for fault, (rec, _) in zip(step.split("+"), injected):
                figures.faults.append(rec)
                print(f"[faults] {fault:<56} down {rec.down_s:5.1f}s  recovered "
                      f"{'NO' if rec.recovered_s is None else f'{rec.recovered_s:.1f}s'} {rec.note}", flush=True)
            await asyncio.sleep(rnd.uniform(0.3, 1.0))
        while traffic.messages < min_events:
            await asyncio.sleep(0.2)
        traffic.stopping.set()
        await traffic_task
        await producer.close()

        # drain: the stream has stopped; lag must reach 0, the outboxes and the mail queue empty themselves
        deadline = now() + 120
        final = None
        while now() < deadline:
            lags = [await lag.lag(g, ts) for g, ts in GROUPS.items()]
            final = None if None in lags else sum(lags)  # type: ignore[arg-type]
            if final == 0 and await backlog(infra) == 0:
                break
            await asyncio.sleep(0.5)
        figures.final_lag = final
        await asyncio.sleep(1.0)
        figures.services_ready = {name: await svc.ready() for name, svc in services.items()}
        figures.injected = dict(traffic.injected)
        await check_echo(infra, traffic, figures)
        await check_notifications(infra, traffic, figures)
        await check_tasks(infra, traffic, figures)
        figures.services_restarts = {name: svc.starts - 1 for name, svc in services.items()}
        figures.wedged_restarts = dict(supervisor.restarts)
        if controls:
            figures.problems.extend(f"negative control: {p}" for p in await negative_controls(infra, traffic))
    finally:
        if supervisor_task is not None:
            supervisor_task.cancel()
        await stop_everything(figures, started, traffic_task=traffic_task, watcher=watcher, ownership=ownership,
                              producer=producer, services=services, infra=infra)
    return conclude(figures, tmp, logdir, RECOVERY_TIMEOUT)


async def backlog(infra: Infra) -> int:
    """Unpublished outbox rows and unsent mails (-1 while the database cannot be reached)."""
    try:
        conn = await asyncpg.connect(infra.admin_dsn, timeout=5)
    except Exception:
        return -1
    try:
        return await conn.fetchval(
            "SELECT (SELECT count(*) FROM echo.outbox) + (SELECT count(*) FROM notifications.outbox)"
            " + (SELECT count(*) FROM tasks.outbox)"
            " + (SELECT count(*) FROM notifications.deliveries WHERE state IN ('pending', 'sending'))")
    finally:
        await conn.close()


@pytest.mark.timeout(1500)  # ~2 min alone; 10+ min while seven other test sessions share the 2 cores
async def test_faults_short() -> None:
    """Short run: 5 service kills in two rounds (external SIGKILL, consumer / relay / mid-send failpoints),
    one broker restart, one PostgreSQL restart, an SMTP outage, every kind of bad input; nothing lost or
    doubled, and negative controls showing the checks catch a lost and a doubled effect."""
    plan = ["kill:echo+failpoint:consumer.after_commit:notifications+failpoint:relay.after_publish:tasks", "scale-up:tasks",
            "kafka", "failpoint:notifications.after_smtp_accept:notifications+failpoint:consumer.after_commit:tasks",
            "scale-down:tasks", "wedge:echo", "postgres", "smtp"]
    figures = await run_suite("short", min_events=2000, rate=60, plan=plan, controls=True)
    assert_clean(figures)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_faults_long() -> None:
    """The long run: HUB_FAULTS_KILLS service kills (default 12) over the three services, 2 broker restarts,
    2 PostgreSQL restarts, 2 SMTP outages, at least HUB_FAULTS_EVENTS events (default 15000)."""
    kills = int(os.environ.get("HUB_FAULTS_KILLS", "12"))
    events = int(os.environ.get("HUB_FAULTS_EVENTS", "15000"))
    kill_kinds = ["kill:echo", "failpoint:consumer.after_commit:tasks", "kill:notifications",
                  "failpoint:relay.after_publish:echo", "failpoint:notifications.after_smtp_accept:notifications",
                  "kill:tasks", "failpoint:consumer.after_commit:echo", "failpoint:relay.after_publish:tasks",
                  "failpoint:relay.after_publish:notifications", "failpoint:consumer.after_commit:notifications"]
    plan = [kill_kinds[i % len(kill_kinds)] for i in range(kills)]
    plan[1:1] = ["scale-up:echo", "scale-up:tasks"]  # two replicas each for most of the run ...
    plan[len(plan) - 2:len(plan) - 2] = ["scale-down:echo+scale-down:tasks"]  # ... one again before the end
    infra_faults = ["kafka", "postgres", "smtp", "kafka", "postgres", "smtp"]
    step = max(1, len(plan) // len(infra_faults))
    for i, fault in enumerate(infra_faults):
        plan.insert(min(len(plan), (i + 1) * step + i), fault)
    figures = await run_suite("long", min_events=events, rate=100, plan=plan)
    assert_clean(figures)
