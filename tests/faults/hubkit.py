"""The four-service fault run: identity, linking, tasks and notifications, with replicas, on a three-broker cluster.

Driven from the outside only, as the CRM, the PM tool and CRM users would: events on crm.ingest / pm.ingest,
requests on hub.requests, notification requests; effects read back from the topics the services write
(pm.commands, crm.commands, linking.events, notifications.outcomes), the mailbox, and the services' own rows
read with the admin role. The handlers' code is not imported (it is being rewritten; the topics are the contract).

Which inputs have which exactly-once effect (the stream, `HubTraffic`):
- a new CRM account of the enabled org -> one `pm.client_company.create` (identity, S13); none for an unknown org;
- a deal turning won -> one `pm.project.create` linked to it (linking, S14), also when it is won, lost and won
  again or edited after; none for a deal never won;
- an association request (deal <-> the project) -> one `linking.link.changed` linked=True (linking, S4);
- a flagged PM task -> one `crm.task.create`, a flagged CRM task -> one `pm.task.create` (tasks, S1/S12);
- a notification request -> one e-mail and one `notification.sent` (notifications);
- contacts (updated, some updates arriving stale) -> identity's and linking's rows at the newest version (per-key
  order: a stale version never wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from faultkit import (
    BAD_KINDS, PREFIX, Figures, Infra, LagProbe, PingTraffic, ServiceProc, read_all, service_env,
)
from hub_schema import encode, make_event, parse_event, topics
from hub_schema.envelope import MAX_MESSAGE_BYTES
from hub_schema.events import crm, pm, requests
from hub_schema.events.common import PermissionProfile
from hub_schema.events.requests import FieldMapping

SERVICES = ("identity", "linking", "tasks", "notifications")
GROUPS = {s: sorted(t.name for t in topics.CATALOG if s in t.consumers) for s in SERVICES}
OUTPUT = {"identity": topics.PM_COMMANDS, "linking": topics.PM_COMMANDS, "tasks": topics.CRM_COMMANDS,
          "notifications": topics.NOTIFICATION_OUTCOMES}
CONSUMERS = {topics.CRM_INGEST: {"identity", "linking", "tasks"}, topics.NOTIFICATION_REQUESTS: {"notifications"}}
ORG, PORTAL, PROJECT, DEAL = "org-1", "portal-1", "proj-1", "deal-1"
T0 = datetime(2024, 4, 1, tzinfo=timezone.utc)
MAPPING = [FieldMapping(pm_field="name", crm_module="deals", crm_field="Deal_Name")]
PROFILE = PermissionProfile(role="manager", permissions=["add_task", "edit_project", "associate_project"])
SPECIALS = ("duplicate", "out_of_order", "unknown_org", *BAD_KINDS)


def hub_service(infra: Infra, logdir: Path, name: str) -> ServiceProc:
    """One of the four services from its console script; info logs (partition assignments) and short delivery timings."""
    extra: dict[str, str] = {"HUB_OBS__LOG_LEVEL": "info"}
    if name == "notifications":
        extra.update(HUB_DELIVERY__LEASE_SECONDS="4", HUB_DELIVERY__OUTAGE_BASE_SECONDS="0.5",
                     HUB_DELIVERY__OUTAGE_MAX_SECONDS="2", HUB_DELIVERY__POLL_SECONDS="0.5",
                     HUB_DELIVERY__RETRY_BASE_SECONDS="1", HUB_DELIVERY__RETRY_MAX_SECONDS="4",
                     HUB_DELIVERY__QUICK_RETRY_INITIAL="0.05", HUB_DELIVERY__QUICK_RETRY_MAX="0.2",
                     HUB_SMTP__TIMEOUT="5", HUB_DELIVERY__MAX_ATTEMPTS="50")
    import sys

    return ServiceProc(name, [str(Path(sys.executable).parent / f"hub-{name}")], service_env(infra, name, **extra), logdir)


def event(payload: Any, key: str, origin: str, org: str = ORG) -> bytes:
    return encode(make_event(payload, org_id=org, entity_key=key, producer="faults", origin=origin))


# --- set-up through the front door -------------------------------------------------------------------


async def quiesce(infra: Infra, lag: LagProbe, timeout: float = 180) -> None:
    """Every group caught up and every outbox empty, twice in a row."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    calm = 0
    while loop.time() < deadline:
        lags = [await lag.lag(g, ts) for g, ts in GROUPS.items()]
        calm = calm + 1 if all(v == 0 for v in lags) and await hub_backlog(infra) == 0 else 0
        if calm >= 2:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"the hub did not quiesce within {timeout}s: lags {dict(zip(GROUPS, lags))}")


async def hub_backlog(infra: Infra) -> int:
    """Unpublished outbox rows of the four services and unsent mails (-1 while the database cannot be reached)."""
    try:
        conn = await asyncpg.connect(infra.admin_dsn, timeout=5)
    except Exception:
        return -1
    try:
        return await conn.fetchval(
            "SELECT " + " + ".join(f"(SELECT count(*) FROM {s}.outbox)" for s in SERVICES)
            + " + (SELECT count(*) FROM notifications.deliveries WHERE state IN ('pending', 'sending'))")
    except Exception:
        return -1
    finally:
        await conn.close()


async def wait_for(bootstrap: str, logical: str, what: str, match: Any, timeout: float = 120) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for r in await read_all(bootstrap, logical):
            if r.value:
                ev = parse_event(r.value)
                if match(ev):
                    return ev
        await asyncio.sleep(1.0)
    raise AssertionError(f"set-up: no {what} on {logical} within {timeout}s")


async def hub_setup(infra: Infra, producer: Any, lag: LagProbe, to_associate: list[str]) -> None:
    """What an org does before using the hub, sent as the CRM, the PM tool and its admin would: users on both sides
    (same e-mails), a paid portal with one project, a deal; the integration enabled (S3, deal won -> project on);
    the deal associated with the project (S4). Then one account proves identity syncs (S13).

    `to_associate`: deals stored now, associated during the stream (a request on hub.requests has no order with
    crm.ingest: a deal sent just before its association could still be unknown to linking)."""
    def user(uid: str, admin: bool) -> bytes:
        return event(crm.CrmUserUpserted(id=uid, email=f"{uid}@example.com", name=uid, active=True, is_admin=admin,
                                         locale="en", modified_at=T0, version=1), f"user:{uid}", "crm")

    def portal_user(uid: str, email: str, role: str) -> bytes:
        return event(pm.PmPortalUserUpserted(portal_id=PORTAL, id=uid, email=email, name=uid, role=role, active=True,
                                             modified_at=T0, version=1), f"portal_user:{uid}", "pm")

    first = [
        (topics.CRM_INGEST, user("u-admin", True), "user:u-admin"),
        (topics.CRM_INGEST, user("u-1", False), "user:u-1"),
        (topics.PM_INGEST, event(pm.PmPortalUpserted(id=PORTAL, name="Portal", plan="paid", active=True, modified_at=T0,
                                                     version=1), f"portal:{PORTAL}", "pm"), f"portal:{PORTAL}"),
        (topics.PM_INGEST, portal_user("pu-admin", "u-admin@example.com", "admin"), "portal_user:pu-admin"),
        (topics.PM_INGEST, portal_user("pu-1", "u-1@example.com", "employee"), "portal_user:pu-1"),
        (topics.PM_INGEST, event(pm.PmProjectUpserted(portal_id=PORTAL, id=PROJECT, name=PROJECT, owner_id="pu-admin",
                                                      status="active", progress_percent=0, schedule_fixed=False,
                                                      user_ids=["pu-admin", "pu-1"], modified_at=T0, version=1),
                                 f"project:{PROJECT}", "pm"), f"project:{PROJECT}"),
        (topics.CRM_INGEST, event(crm.CrmDealUpserted(id=DEAL, name="Deal 1", account_id=None, stage="Negotiation",
                                                      won=False, modified_at=T0, version=1), f"deal:{DEAL}", "crm"),
         f"deal:{DEAL}"),
    ]
    for did in to_associate:
        first.append((topics.CRM_INGEST, event(crm.CrmDealUpserted(
            id=did, name=f"Deal {did}", account_id=None, won=False, stage="Qualification", modified_at=T0, version=1),
            f"deal:{did}", "crm"), f"deal:{did}"))
    for topic, raw, key in first:
        await producer.send(topic, raw, key)
    await quiesce(infra, lag)
    enable = requests.IntegrationEnable(request_id=uuid.uuid4(), acting_user_id="u-admin", portal_id=PORTAL,
                                        field_mapping=MAPPING, permissions=PROFILE, deal_won_creates_project=True)
    await producer.send(topics.HUB_REQUESTS, event(enable, f"org:{ORG}", "crm"), f"org:{ORG}")
    await wait_for(infra.bootstrap, topics.LINKING_EVENTS, "integration enabled",
                   lambda ev: ev.event_type == "linking.integration.changed" and ev.payload.state == "enabled")
    await quiesce(infra, lag)
    await producer.send(topics.HUB_REQUESTS, associate(DEAL), f"org:{ORG}")
    await wait_for(infra.bootstrap, topics.LINKING_EVENTS, f"link {DEAL} <-> {PROJECT}", lambda ev: is_link(ev, DEAL))
    probe = "acc-probe"
    await producer.send(topics.CRM_INGEST, account(probe, 1), f"account:{probe}")
    await wait_for(infra.bootstrap, topics.PM_COMMANDS, f"client company for {probe}",
                   lambda ev: ev.event_type == "pm.client_company.create" and ev.payload.crm_account_id == probe)
    await quiesce(infra, lag)


def associate(record_id: str) -> bytes:
    return event(requests.ProjectAssociate(request_id=uuid.uuid4(), acting_user_id="u-admin", record_type="deal",
                                           record_id=record_id, project_id=PROJECT), f"org:{ORG}", "crm")


def is_link(ev: Any, record_id: str) -> bool:
    return (ev.event_type == "linking.link.changed" and ev.payload.linked and ev.payload.project_id == PROJECT
            and ev.payload.record.record_id == record_id)


def account(account_id: str, version: int, org: str = ORG, name: str | None = None) -> bytes:
    return event(crm.CrmAccountUpserted(id=account_id, name=name or f"Account {account_id} v{version}",
                                        modified_at=T0 + timedelta(minutes=version), version=version),
                 f"account:{account_id}", "crm", org)


# --- the stream -----------------------------------------------------------------------------------------------


@dataclass
class HubTraffic(PingTraffic):
    """A steady mixed stream for the four services (see the module doc), salted with duplicates, stale versions,
    unknown orgs and bad inputs. Reuses PingTraffic's notification and PM-task senders and its bookkeeping."""

    accounts: set[str] = field(default_factory=set)  # one pm.client_company.create each
    accounts_unknown_org: set[str] = field(default_factory=set)  # none
    won_deals: set[str] = field(default_factory=set)  # one pm.project.create each
    unwon_deals: set[str] = field(default_factory=set)  # none
    associated: set[str] = field(default_factory=set)  # deals: one link.changed (linked) each
    crm_tasks: set[str] = field(default_factory=set)  # one pm.task.create each
    to_associate: list[str] = field(default_factory=list)  # deals stored at set-up, associated one by one
    lanes: int = 4  # concurrent senders (each waits for its acks; see run)
    contacts: dict[str, int] = field(default_factory=dict)  # contact id -> newest version sent
    _last_account: bytes | None = None

    async def _send(self, topic: str, raw: bytes, key: str) -> None:
        await self.producer.send(topic, raw, key)
        self.messages += 1

    async def _account(self, i: int, n: int) -> None:
        """`i`: the stream position (ids), `n`: the how-many-th of its kind (which variant)."""
        aid = f"acc-{i}"
        if n % 7 == 3:
            self.injected["account_unknown_org"] += 1
            self.accounts_unknown_org.add(aid)
            await self._send(topics.CRM_INGEST, account(aid, 1, org=f"org-unknown-{i}"), f"account:{aid}")
            return
        self.accounts.add(aid)
        raw = account(aid, 1)
        self._last_account = raw
        await self._send(topics.CRM_INGEST, raw, f"account:{aid}")
        if n % 5 == 1:  # renamed while its client company is being created: still one company
            self.injected["account_renamed"] += 1
            await self._send(topics.CRM_INGEST, account(aid, 2), f"account:{aid}")

    async def _contact(self, i: int, n: int) -> None:
        cid = f"con-{i}"
        versions = [1, 2, 1] if n % 4 == 2 else [1, 2] if n % 4 == 0 else [1]  # some updated, some then stale
        if versions == [1, 2, 1]:
            self.injected["contact_out_of_order"] += 1
        for v in versions:
            payload = crm.CrmContactUpserted(id=cid, account_id=f"acc-{i - 1}", first_name="C", last_name=f"{i} v{v}",
                                             email=f"c{i}.v{v}@example.com", modified_at=T0 + timedelta(minutes=v), version=v)
            await self._send(topics.CRM_INGEST, event(payload, f"contact:{cid}", "crm"), f"contact:{cid}")
        self.contacts[cid] = max(versions)

    async def _deal(self, i: int, n: int) -> None:
        did = f"deal-{i}"
        shape = n % 4  # 0: open then won then edited; 1: never won; 2: won at once; 3: won, lost, won again
        wons = {0: [False, True, True], 1: [False], 2: [True], 3: [True, False, True]}[shape]
        (self.won_deals if any(wons) else self.unwon_deals).add(did)
        for v, won in enumerate(wons, start=1):
            payload = crm.CrmDealUpserted(id=did, name=f"Deal {i}", account_id=None, won=won,
                                          stage="Closed Won" if won else "Negotiation", amount=Decimal(100 * v),
                                          modified_at=T0 + timedelta(minutes=v), version=v)
            await self._send(topics.CRM_INGEST, event(payload, f"deal:{did}", "crm"), f"deal:{did}")

    async def _association(self) -> bool:
        if len(self.associated) >= len(self.to_associate):
            return False
        did = self.to_associate[len(self.associated)]
        self.unwon_deals.add(did)
        self.associated.add(did)
        await self._send(topics.HUB_REQUESTS, associate(did), f"org:{ORG}")
        return True

    async def _crm_task(self, i: int, n: int) -> None:
        tid = f"ct-{i}"
        self.crm_tasks.add(tid)
        raw = event(crm.CrmTaskUpserted(id=tid, record_type="deal", record_id=DEAL, subject=f"CT {tid}",
                                        priority="medium", status="open", created_by="u-1", acting_user_id="u-1",
                                        add_to_pm=True, modified_at=T0, version=1), f"task:{tid}", "crm")
        await self._send(topics.CRM_INGEST, raw, f"task:{tid}")
        if n % 6 == 5:  # the connector delivered it twice
            self.injected["crm_task_duplicate_event"] += 1
            await self._send(topics.CRM_INGEST, raw, f"task:{tid}")

    async def _special(self, n: int) -> None:
        kind = SPECIALS[n % len(SPECIALS)]
        self.injected[kind] += 1
        if kind == "duplicate":
            if self._last_account is not None:
                await self._send(topics.CRM_INGEST, self._last_account, parse_event(self._last_account).envelope.entity_key)
        elif kind == "out_of_order":  # an account's older version after its newer one: nothing happens
            aid = f"acc-ooo-{n}"
            self.accounts.add(aid)
            for v in (2, 1):
                await self._send(topics.CRM_INGEST, account(aid, v), f"account:{aid}")
        elif kind == "unknown_org":
            aid = f"acc-u{n}"
            self.accounts_unknown_org.add(aid)
            await self._send(topics.CRM_INGEST, account(aid, 1, org=f"org-unknown-{n}"), f"account:{aid}")
        else:
            await self._bad(kind, n)

    async def _bad(self, kind: str, n: int) -> None:
        """A CRM account message broken in one way; every crm.ingest consumer must dead-letter it with the code."""
        marker = f"bad-{kind}-{uuid.uuid4().hex}"
        key = f"account:{marker}"
        good = json.loads(account(marker, 1, name=marker))
        if kind == "malformed_json":
            raw = ('{"event_id": "' + marker + '", "payload": {"id": 1').encode()
        elif kind == "wrong_version":
            raw = json.dumps({**good, "version": 99}).encode()
        elif kind == "oversized":
            raw = json.dumps({**good, "padding": marker + "x" * (MAX_MESSAGE_BYTES + 1024)}).encode()
        elif kind == "unknown_type":
            raw = json.dumps({**good, "event_type": "crm.unheard_of"}).encode()
        else:  # invalid_payload: no name
            raw = json.dumps({**good, "payload": {k: v for k, v in good["payload"].items() if k != "name"}}).encode()
        await self._send(topics.CRM_INGEST, raw, key)
        self.bad.append((kind, BAD_KINDS[kind], marker, topics.CRM_INGEST))

    async def run(self) -> None:
        """`lanes` senders side by side, each through the same cycle of inputs on keys of its own (ids are unique
        across lanes: lane + lanes × position), so per-key order holds while acks=all round trips overlap."""
        await asyncio.gather(*(self._lane(lane) for lane in range(self.lanes)))
        self.done.set()

    async def _lane(self, lane: int) -> None:
        import random

        rnd = random.Random(self.seed + lane)
        loop = asyncio.get_running_loop()
        started = loop.time()
        last_notifications: list[bytes] = []
        slots = ("notify", "pm_task", "account", "contact", "deal", "crm_task", "association", "special",
                 "account", "notify", "contact", "deal")
        counts: Counter[str] = Counter()
        self.notify_every = self.tasks_every = 1  # the helpers' variant = their argument modulo a small number
        for k in range(self.total):
            if self.stopping.is_set():
                break
            i = k * self.lanes + lane
            slot = slots[k % len(slots)]
            n = counts[slot] * self.lanes + lane
            counts[slot] += 1
            accounts = (counts["account"] + counts["association"]) * self.lanes + lane
            if slot == "notify":
                await self._send_notification(n, rnd, last_notifications)
            elif slot == "pm_task":
                await self._send_pm_tasks(n)
            elif slot == "account":
                await self._account(i, accounts)
            elif slot == "contact":
                await self._contact(i, n)
            elif slot == "deal":
                await self._deal(i, n)
            elif slot == "crm_task":
                await self._crm_task(i, n)
            elif slot == "association":
                if counts[slot] % 3 != 1 or not await self._association():
                    await self._account(i, accounts)
            else:
                await self._special(n)
            delay = started + (k + 1) * self.lanes / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


# --- checks -----------------------------------------------------------------------------------------------------


def _once(figures: Figures, name: str, expected: set[str], got: dict[str, set[str]], forbidden: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """`expected` inputs must each have exactly one distinct effect id in `got`; `forbidden` ones none."""
    missing = sorted(k for k in expected if not got.get(k))
    doubled = sorted(k for k in expected if len(got.get(k, ())) > 1)
    leaked = sorted(k for k in forbidden if got.get(k))
    figures.effects[name] = [len(expected) - len(missing) - len(doubled), len(expected)]
    figures.accepted += len(expected)
    figures.lost += len(missing)
    figures.duplicated += len(doubled)
    if missing:
        figures.problems.append(f"{name}: {len(missing)} without it, e.g. {missing[:3]}")
    if doubled:
        figures.problems.append(f"{name}: {len(doubled)} with several, e.g. {[(k, sorted(got[k])) for k in doubled[:2]]}")
    if leaked:
        figures.problems.append(f"{name}: {len(leaked)} inputs that must have none have one, e.g. {leaked[:3]}")


async def expect_hub_notifications(infra: Infra, traffic: HubTraffic) -> int:
    """Requests the services asked for themselves (a matching report after the enable, refusals) must be e-mailed
    exactly once like the stream's own: add them to what check_notifications expects. Returns how many."""
    own = set()
    for r in await read_all(infra.bootstrap, topics.NOTIFICATION_REQUESTS):
        if r.value:
            with contextlib.suppress(Exception):
                ev = parse_event(r.value)
                if ev.event_type == "notification.requested" and ev.envelope.producer != "faults":
                    own.add(ev.payload.request_id)
    traffic.notify_accepted |= own
    return len(own)


async def check_hub(infra: Infra, traffic: HubTraffic, figures: Figures) -> None:
    """identity, linking and tasks (CRM -> PM) effects, contacts' newest versions; see the module doc."""
    figures.events_sent = traffic.messages
    figures.producer_retries = traffic.producer.retries
    deliveries: Counter[str] = Counter()
    companies: dict[str, set[str]] = defaultdict(set)
    projects: dict[str, set[str]] = defaultdict(set)
    pm_tasks: dict[str, set[str]] = defaultdict(set)
    for r in await read_all(infra.bootstrap, topics.PM_COMMANDS):
        if not r.value:
            continue
        ev = parse_event(r.value)
        deliveries[str(ev.event_id)] += 1
        if deliveries[str(ev.event_id)] > 1:
            continue
        if ev.event_type == "pm.client_company.create":
            companies[ev.payload.crm_account_id].add(str(ev.payload.command_id))
        elif ev.event_type == "pm.project.create":
            for rec in ev.payload.linked_records:
                if rec.record_type == "deal":
                    projects[rec.record_id].add(str(ev.payload.command_id))
        elif ev.event_type == "pm.task.create" and ev.payload.title.startswith("CT "):
            pm_tasks[ev.payload.title.split(" ", 1)[1]].add(str(ev.payload.command_id))
    links: dict[str, set[str]] = defaultdict(set)
    for r in await read_all(infra.bootstrap, topics.LINKING_EVENTS):
        if not r.value:
            continue
        ev = parse_event(r.value)
        deliveries[str(ev.event_id)] += 1
        if deliveries[str(ev.event_id)] == 1 and ev.event_type == "linking.link.changed" and ev.payload.linked \
                and ev.payload.project_id == PROJECT:
            links[ev.payload.record.record_id].add(str(ev.event_id))
    figures.inflight_duplicates += sum(n - 1 for n in deliveries.values())
    _once(figures, "CRM accounts → one pm.client_company.create (identity)", traffic.accounts, companies,
          traffic.accounts_unknown_org)
    _once(figures, "won deals → one pm.project.create (linking)", traffic.won_deals, projects, traffic.unwon_deals)
    _once(figures, "associations → one link.changed (linking)", traffic.associated, links)
    _once(figures, "flagged CRM tasks → one pm.task.create (tasks)", traffic.crm_tasks, pm_tasks)

    conn = await asyncpg.connect(infra.admin_dsn)
    try:
        identity_rows = {r["id"]: r["version"] for r in await conn.fetch(
            "SELECT id, version FROM identity.contacts WHERE org_id = $1", ORG)}
        linking_rows = {r["record_id"]: r["version"] for r in await conn.fetch(
            "SELECT record_id, version FROM linking.crm_records WHERE org_id = $1 AND record_type = 'contact'", ORG)}
        outboxes = {s: await conn.fetchval(f"SELECT count(*) FROM {s}.outbox") for s in SERVICES}
    finally:
        await conn.close()
    for service, rows in (("identity", identity_rows), ("linking", linking_rows)):
        missing = [c for c in traffic.contacts if c not in rows]
        stale = [c for c, v in traffic.contacts.items() if c in rows and rows[c] != v]
        figures.effects[f"contacts at their newest version ({service})"] = [
            len(traffic.contacts) - len(missing) - len(stale), len(traffic.contacts)]
        figures.lost += len(missing)
        figures.order_violations += len(stale)
        if missing:
            figures.problems.append(f"{service}: {len(missing)} contacts never stored, e.g. {missing[:3]}")
        if stale:
            figures.problems.append(f"{service}: {len(stale)} contacts not at their newest version, e.g. "
                                    f"{[(c, rows[c], traffic.contacts[c]) for c in stale[:3]]}")
    figures.accepted += len(traffic.contacts)
    for service, left in outboxes.items():
        if left:
            figures.problems.append(f"{service}: {left} outbox rows never published")


# --- partition ownership as the replicas saw it -----------------------------------------------------------------

_TS = re.compile(r"^\d{4}-\d\d-\d\dT")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def ownership_intervals(procs: list[ServiceProc], run_end: float) -> list[tuple[str, str, str, float, float]]:
    """(group, partition, process, from, to): from a replica's "partitions assigned" log line to its next
    "partitions revoked" for that partition, or to the moment the process was SIGKILLed / found gone / asked to
    stop (a graceful stop commits its batch before it leaves the group; aiokafka calls no revoke then), or to the
    moment its offset commit began if it then exited wedged (`consumer wedged`: from there it handled nothing)."""
    out: list[tuple[str, str, str, float, float]] = []
    for proc in procs:
        group = proc.name.split("-", 1)[0]
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        lives = text.split("\n=== start #")[1:]  # one chunk per process, in start order
        for index, chunk in enumerate(lives):
            start, end = proc.lives[index] if index < len(proc.lives) else (None, None)
            end = end if end is not None else run_end
            owned: dict[str, float] = {}
            who = f"{proc.name}#{index + 1}"
            for line in chunk.splitlines():
                if not line.startswith("{") or ("partitions " not in line and "consumer wedged" not in line):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                what, stamp = rec.get("event"), rec.get("timestamp", "")
                if rec.get("alert") == "consumer_wedged" and rec.get("since"):
                    # stuck in its offset commit since then: it handled nothing more, then exited (WEDGED_EXIT_CODE)
                    since = _epoch(rec["since"])
                    out.extend((group, p, who, t, max(t, since)) for p, t in owned.items())
                    owned.clear()
                    continue
                if what not in ("partitions assigned", "partitions revoked") or not _TS.match(stamp):
                    continue
                t = _epoch(stamp)
                for p in rec.get("partitions", []):
                    if what == "partitions assigned":
                        owned.setdefault(p, t)
                    elif p in owned:
                        out.append((group, p, who, owned.pop(p), t))
            out.extend((group, p, who, t, end) for p, t in owned.items())
    return out


def overlaps(intervals: list[tuple[str, str, str, float, float]]) -> list[str]:
    """Two processes owning one partition of one group at the same instant (revoked, then assigned elsewhere, is fine)."""
    by_partition: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for group, p, who, a, b in intervals:
        by_partition[(group, p)].append((a, b, who))
    found: list[str] = []
    for (group, p), spans in by_partition.items():
        spans.sort()
        for i, (a1, b1, w1) in enumerate(spans):
            for a2, b2, w2 in spans[i + 1:]:
                if a2 >= b1:
                    break
                if w1 != w2:
                    found.append(f"{group} {p}: {w1} [{a1:.3f}, {b1:.3f}) and {w2} [{a2:.3f}, {b2:.3f}) ({b1 - a2:.3f}s)")
    return found
