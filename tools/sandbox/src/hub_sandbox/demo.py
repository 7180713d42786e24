"""`make demo`: a story through the FAQ, told against a running hub (not one of the four services).

It plays a CRM admin and a PM user through the sandbox's HTTP API
(`SandboxHttpClient`) and reads the outcome where a person would look: what the
sandbox CRM and PM now hold (its GET endpoints), the linking read API (service
key), the mailbox folder of the SMTP sink (.eml files), and the hub's answers to
UI requests on `linking.events` (a refusal has no other visible trace).

Why shaped like this:
- `run_story(target, org_id)` takes base URLs, the mailbox folder and the Kafka
  bootstrap as parameters, so `make demo` (stack.json of `make up`) and
  tests/e2e/test_demo.py (the in-process `hub_stack`) run the same story;
- every step waits by polling observable state with a timeout (`wait_for`),
  never by sleeping blindly; a UI request refused only because the hub has not
  yet seen the records it names (`portal_unknown`, `unknown_user`, `not_found`)
  is sent again, as a person would click again;
- each run uses a fresh org id and org-specific e-mail addresses, so it can be
  rerun on the same stack and its mails told apart from other runs'.

Run: `uv run python -m hub_sandbox.demo [--state-dir var/local] [--org-id demo-...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from hub_sandbox.client import SandboxHttpClient

T = TypeVar("T")
ADMIN_TOKEN_FILE = "secrets/admin-token"  # where `make up` writes the stack's admin token (hub_devstack.stack)
PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}
TRANSIENT = {"portal_unknown", "unknown_user", "not_found", "crm_user_not_in_portal"}


@dataclass
class Target:
    """Where the hub runs."""

    sandbox_url: str
    linking_url: str
    maildir: Path
    kafka_bootstrap: str
    topic_prefix: str = ""
    kafka_options: dict[str, Any] = field(default_factory=dict)
    """aiokafka security options of the principal the demo reads as (the CRM UI's, "ui")."""
    admin_token: str = ""
    timeout: float = 90.0


@dataclass
class Outcome:
    """What the story saw, for tests: step name -> facts."""

    org_id: str
    facts: dict[str, Any] = field(default_factory=dict)
    mails: list[Path] = field(default_factory=list)


class DemoFailed(AssertionError):
    pass


async def wait_for(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float, interval: float = 0.3) -> T:
    """Poll `probe` until it returns something truthy; DemoFailed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f}s waiting for: {what} (last: {last!r})")
        await asyncio.sleep(interval)


class HubEvents:
    """A tail of linking.events for one org (answers to UI requests), read from the end at start."""

    def __init__(self, bootstrap: str, topic: str, org_id: str, options: dict[str, Any] | None = None) -> None:
        self.bootstrap, self.topic, self.org_id = bootstrap, topic, org_id
        self.options = {k: v for k, v in (options or {}).items() if k != "bootstrap_servers"}
        self.events: list[dict[str, Any]] = []
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **self.options)
        await self._consumer.start()
        parts = await wait_for(f"topic {self.topic}", self._partitions, 30)
        tps = [TopicPartition(self.topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so nothing published later is skipped
            await self._consumer.position(tp)

    async def _partitions(self) -> set[int] | None:
        await self._consumer._client.force_metadata_update()  # noqa: SLF001
        return self._consumer.partitions_for_topic(self.topic) or None

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self) -> list[dict[str, Any]]:
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for r in records:
                try:
                    env = json.loads(r.value)
                except ValueError:
                    continue
                if env.get("org_id") == self.org_id:
                    self.events.append(env)
        return self.events

    async def answer(self, request_id: str, since: int = 0, ok_type: str | None = None) -> dict[str, Any] | None:
        """The hub's answer to a request: the first event naming its request_id, or (for requests whose
        acceptance is a state change, e.g. linking.integration.changed) the first `ok_type` event since `since`."""
        for env in (await self.poll())[since:]:
            if env["payload"].get("request_id") == request_id or env["event_type"] == ok_type:
                return env
        return None

    async def find(self, event_type: str, pred: Callable[[dict[str, Any]], bool] = lambda p: True) -> dict[str, Any] | None:
        for env in await self.poll():
            if env["event_type"] == event_type and pred(env["payload"]):
                return env
        return None


class Story:
    def __init__(self, target: Target, org_id: str, out: Callable[[str], None]) -> None:
        self.t = target
        self.org = org_id
        self.out = out
        self.result = Outcome(org_id)
        self.domain = f"{org_id}.example.com"
        self.admin_email = f"admin@{self.domain}"
        self.http = httpx.AsyncClient(timeout=15)
        self.ui = SandboxHttpClient(target.sandbox_url, org_id=org_id, acting_user_id="u-admin", http=self.http)
        self.events = HubEvents(target.kafka_bootstrap, f"{target.topic_prefix}linking.events", org_id, target.kafka_options)
        self.key: str | None = None
        self._mails_seen: set[Path] = set()

    # -- output ------------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.out(f"\n== {title}")

    def say(self, text: str) -> None:
        self.out(f"   {text}")

    # -- observation helpers -----------------------------------------------------------------

    def mails(self) -> list[tuple[Path, Any]]:
        out = []
        for path in sorted(self.t.maildir.glob("*.eml")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if self.domain in str(msg.get("To", "")):
                out.append((path, msg))
        return out

    async def wait_mail(self, what: str, pred: Callable[[Any], bool]) -> tuple[Path, Any]:
        async def probe() -> tuple[Path, Any] | None:
            for path, msg in self.mails():
                if path not in self._mails_seen and pred(msg):
                    return path, msg
            return None

        path, msg = await wait_for(f"an e-mail: {what}", probe, self.t.timeout)
        self._mails_seen.add(path)
        self.result.mails.append(path)
        self.say(f"e-mail to {msg['To']}: {msg['Subject']!r}")
        self.say(f"  file: {path}")
        return path, msg

    async def read_api(self, path: str, key: str | None = None) -> httpx.Response:
        return await self.http.get(f"{self.t.linking_url}{path}", headers={"Authorization": f"Bearer {key or self.key}"})

    async def projects_of(self, record_type: str, record_id: str) -> list[dict[str, Any]]:
        resp = await self.read_api(f"/api/v1/records/{record_type}/{record_id}/projects")
        resp.raise_for_status()
        return list(resp.json()["projects"])

    async def wait_projects(self, record_type: str, record_id: str, pred: Callable[[list[dict[str, Any]]], bool],
                            what: str) -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]] | None:
            projects = await self.projects_of(record_type, record_id)
            return projects if pred(projects) else None

        try:
            projects = await wait_for(what, probe, self.t.timeout)
        except DemoFailed:
            if pred([]):
                projects = []
            else:
                raise
        url = f"{self.t.linking_url}/api/v1/records/{record_type}/{record_id}/projects"
        self.say(f"read API {url}")
        self.say(f"  -> {[(p['name'], p['portal_id'], p['status'], p['progress_percent']) for p in projects] or 'no projects'}")
        return projects

    async def wait_no_projects(self, record_type: str, record_id: str, what: str) -> None:
        async def probe() -> bool:
            return not await self.projects_of(record_type, record_id)

        await wait_for(what, probe, self.t.timeout)
        self.say(f"read API {self.t.linking_url}/api/v1/records/{record_type}/{record_id}/projects -> no projects")

    async def request(self, request_type: str, *, expect: str, as_user: str = "u-admin", **fields: Any) -> dict[str, Any]:
        """Send a UI request and wait for the hub's answer; resend while the hub has not seen what it names yet."""
        ui = self.ui.as_user(as_user)
        ok_type = "linking.integration.changed" if request_type.startswith("hub.integration.") else None
        deadline = time.monotonic() + self.t.timeout
        while True:
            since = len(await self.events.poll())
            sent = await ui.request(request_type, **fields)
            answer = await wait_for(f"the hub's answer to {request_type}",
                                    lambda: self.events.answer(sent["request_id"], since, ok_type), self.t.timeout)
            code = answer["payload"].get("reason_code")
            if answer["event_type"] == "linking.request.refused" and code in TRANSIENT \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            break
        if expect == "refused" and answer["event_type"] != "linking.request.refused":
            raise DemoFailed(f"{request_type} should have been refused, the hub answered {answer['event_type']}")
        if expect == "accepted" and answer["event_type"] == "linking.request.refused":
            raise DemoFailed(f"{request_type} was refused: {answer['payload']['reason_code']}: {answer['payload']['reason']}")
        return answer

    async def integration_changed(self, state: str, portal_id: str, after: int = 0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            found = [e for e in await self.events.poll() if e["event_type"] == "linking.integration.changed"
                     and e["payload"]["state"] == state and e["payload"]["portal_id"] == portal_id]
            return found[after] if len(found) > after else None

        return await wait_for(f"integration {state} with {portal_id}", probe, self.t.timeout)

    async def crm(self, kind: str) -> list[dict[str, Any]]:
        return await self.ui.crm.list(kind)

    async def pm(self, kind: str) -> list[dict[str, Any]]:
        return await self.ui.pm.list(kind)

    async def wait_record(self, side: str, kind: str, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            return next((r for r in await self.ui.list(side, kind) if pred(r)), None)

        rec = await wait_for(what, probe, self.t.timeout)
        self.say(f"{side.upper()} now shows {kind} {rec['id']}: {_brief(rec)}")
        self.say(f"  GET {self.t.sandbox_url}/sandbox/{side}/{kind}/{rec['id']}?org_id={self.org}")
        return rec

    # -- the story -----------------------------------------------------------------------------

    async def run(self) -> Outcome:
        await self.events.start()
        try:
            await self._story()
        finally:
            await self.events.stop()
            await self.http.aclose()
        return self.result

    async def _story(self) -> None:
        ui, f = self.ui, self.result.facts
        self.out(f"org {self.org}: sandbox {self.t.sandbox_url}, read API {self.t.linking_url}, mailbox {self.t.maildir}")

        self.step("0. A service key for the read API (S24)")
        self.key = await self.new_key()
        self.say(f"POST {self.t.linking_url}/api/v1/orgs/{self.org}/service-key -> key ...{self.key[-6:]}")

        self.step("1. The CRM and the PM tool before the integration")
        await ui.crm.upsert_org(name=f"Demo {self.org}", edition="enterprise")
        await ui.crm.upsert_user(id="u-admin", email=self.admin_email, name="Ada Admin", active=True, is_admin=True, locale="en")
        await ui.crm.upsert_user(id="u-bob", email=f"bob@{self.domain}", name="Bob Sales", active=True, is_admin=False, locale="ja")
        acme = await ui.crm.upsert_account(name="Acme Corp")
        initech = await ui.crm.upsert_account(name="Initech")
        carol = await ui.crm.upsert_contact(first_name="Carol", last_name="Client", email=f"carol@{self.domain}", account_id=acme["id"])
        await ui.pm.upsert_portal(id="p-free", name="Free portal", plan="free")
        await ui.pm.upsert_portal(id="p-paid", name="Paid portal", plan="paid")
        await ui.pm.upsert_portal_user(id="pu-admin", portal_id="p-paid", email=self.admin_email, name="Ada Admin", role="admin")
        await ui.pm.upsert_portal_user(id="pu-bob", portal_id="p-paid", email=f"bob@{self.domain}", name="Bob Sales")
        c_acme = await ui.pm.upsert_client_company(portal_id="p-paid", name="ACME corp")
        c_umbrella = await ui.pm.upsert_client_company(portal_id="p-paid", name="Umbrella")
        rollout = await ui.pm.upsert_project(portal_id="p-paid", name="Acme rollout", owner_id="pu-admin",
                                             user_ids=["pu-admin", "pu-bob"], client_company_ids=[c_acme["id"]],
                                             progress_percent=20)
        website = await ui.pm.upsert_project(portal_id="p-paid", name="Website relaunch", owner_id="pu-admin",
                                             user_ids=["pu-admin"], schedule_fixed=True)
        await ui.pm.upsert_project(portal_id="p-paid", name="Umbrella audit", owner_id="pu-admin",
                                   client_company_ids=[c_umbrella["id"]])
        self.say(f"CRM accounts: {[a['name'] for a in await self.crm('account')]}, contact {carol['first_name']} {carol['last_name']}")
        self.say(f"PM projects: {[p['name'] for p in await self.pm('project')]}; "
                 f"client companies: {[c['name'] for c in await self.pm('client_company')]}")
        f.update(acme=acme["id"], initech=initech["id"], carol=carol["id"], rollout=rollout["id"], website=website["id"])

        self.step("2. Enabling with a FREE portal is refused (S17)")
        refusal = await self.request("hub.integration.enable", expect="refused", portal_id="p-free", field_mapping=[],
                                     permissions=PROFILE, deal_won_creates_project=False)
        f["free_refusal"] = refusal["payload"]["reason_code"]
        self.say(f"linking.request.refused: {refusal['payload']['reason_code']}: {refusal['payload']['reason']}")

        self.step("3. Enabling with the PAID portal; clients matched to accounts, .xlsx report mailed (S3, S21/S22)")
        mapping = [{"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"}]
        await self.request("hub.integration.enable", expect="accepted", portal_id="p-paid", field_mapping=mapping,
                           permissions=PROFILE, deal_won_creates_project=True)
        self.say("linking.integration.changed: enabled with p-paid")
        path, msg = await self.wait_mail("the matching report", lambda m: any(
            (p.get_filename() or "").endswith(".xlsx") for p in m.iter_attachments()))
        f["report_attachments"] = [p.get_filename() for p in msg.iter_attachments()]
        self.say(f"  attachment(s): {f['report_attachments']}")
        projects = await self.wait_projects("account", acme["id"], lambda ps: any(p["project_id"] == rollout["id"] for p in ps),
                                            "Acme rollout linked to Acme Corp by matching")
        f["acme_projects_after_matching"] = [p["project_id"] for p in projects]

        self.step("4. Associating a project with a record (S4, S16)")
        await self.request("hub.project.associate", expect="accepted", record_type="account", record_id=initech["id"],
                           project_id=website["id"])
        await self.wait_projects("account", initech["id"], lambda ps: any(p["project_id"] == website["id"] for p in ps),
                                 "Website relaunch linked to Initech")
        await self.request("hub.project.associate", expect="accepted", record_type="account", record_id=initech["id"],
                           project_id=rollout["id"])
        await self.wait_projects("account", initech["id"], lambda ps: len(ps) == 2, "Initech has two projects (S16)")
        resp = await self.read_api(f"/api/v1/projects/{rollout['id']}/records")
        self.say(f"read API {self.t.linking_url}/api/v1/projects/{rollout['id']}/records")
        self.say(f"  -> {[(r['record_type'], r['name']) for r in resp.json()['records']]}")
        f["rollout_records"] = sorted((r["record_type"], r["record_id"]) for r in resp.json()["records"])

        self.step("5. A won deal creates a project (S14)")
        deal = await ui.crm.upsert_deal(name="Acme expansion", account_id=acme["id"], stage="Negotiation")
        await ui.crm.upsert_deal(id=deal["id"], won=True)
        project = await self.wait_record("pm", "project", lambda p: p["name"] == "Acme expansion", "the project of the won deal")
        await self.wait_projects("deal", deal["id"], lambda ps: any(p["project_id"] == project["id"] for p in ps),
                                 "the new project linked to the deal")
        f["deal_project"] = project["id"]

        self.step("6. Tasks and comments mirrored both ways (S5, S12, S1)")
        pm_task = await ui.pm.upsert_task(project_id=rollout["id"], title="Kick-off meeting", add_to_crm=True,
                                          due_date="2027-01-15", priority="high")
        self.say(f"PM task {pm_task['id']} created with add to CRM on {rollout['name']}")
        crm_task = await self.wait_record("crm", "task", lambda t: t.get("subject") == "Kick-off meeting"
                                          and t.get("record_id") == acme["id"], "the PM task mirrored to the CRM (account Acme)")
        recurring = await ui.pm.upsert_task(project_id=rollout["id"], title="Weekly sync", add_to_crm=True, recurring=True)
        self.say(f"recurring PM task {recurring['id']} is not mirrored (S5)")
        crm_new = await ui.crm.upsert_task(subject="Send contract", record_type="account", record_id=acme["id"], add_to_pm=True,
                                           pm_project_id=rollout["id"], due_date="2027-02-01")
        self.say(f"CRM task {crm_new['id']} created with add to PM on account Acme Corp (project {rollout['name']})")
        pm_new = await self.wait_record("pm", "task", lambda t: t.get("title") == "Send contract", "the CRM task in the PM tool")
        await ui.pm.add_comment(task_id=pm_task["id"], body="Agenda sent to the customer", author_name="Ada Admin")
        note = await self.wait_record("crm", "note", lambda n: "Agenda sent" in (n.get("body") or ""),
                                      "the PM comment as a CRM note")
        await ui.crm.update_task(crm_task["id"], subject="Kick-off meeting (on site)")
        await self.wait_record("pm", "task", lambda t: t["id"] == pm_task["id"] and t.get("title") == "Kick-off meeting (on site)",
                               "the CRM title change in the PM tool")
        await ui.pm.update_task(pm_new["id"], priority="high", description="Legal reviewed the draft")
        await self.wait_record("crm", "task", lambda t: t["id"] == crm_new["id"] and t.get("priority") == "high"
                               and t.get("description") == "Legal reviewed the draft", "the PM priority/description change in the CRM")
        f.update(pm_task=pm_task["id"], crm_task=crm_task["id"], note=note["id"], pm_new=pm_new["id"], crm_new=crm_new["id"],
                 recurring_in_crm=[t["id"] for t in await self.crm("task") if t.get("subject") == "Weekly sync"])

        self.step("7. S10: reopening from the CRM a subtask whose parent is closed in the PM tool")
        parent = await ui.pm.upsert_task(project_id=rollout["id"], title="Migration", add_to_crm=True)
        sub = await ui.pm.upsert_task(project_id=rollout["id"], title="Migrate users", add_to_crm=True,
                                      parent_task_id=parent["id"], status="closed")
        crm_sub = await self.wait_record("crm", "task", lambda t: t.get("subject") == "Migrate users" and t.get("status") == "closed",
                                         "the closed subtask in the CRM")
        await ui.pm.update_task(parent["id"], status="closed")
        await self.wait_record("crm", "task", lambda t: t.get("subject") == "Migration" and t.get("status") == "closed",
                               "the closed parent in the CRM")
        await ui.as_user("u-bob").crm.update_task(crm_sub["id"], status="open")
        self.say(f"Bob reopens CRM task {crm_sub['id']} ...")
        _, msg = await self.wait_mail("the subtask could not be updated (to Bob)", lambda m: "bob@" in str(m["To"]))
        back = await self.wait_record("crm", "task", lambda t: t["id"] == crm_sub["id"] and t.get("status") == "closed",
                                      "the CRM subtask back to closed")
        pm_sub = await ui.pm.get("task", sub["id"])
        self.say(f"PM subtask {sub['id']} status: {pm_sub and pm_sub['status']}")
        f.update(s10_mail=str(msg["Subject"]), s10_crm_status=back["status"], s10_pm_status=pm_sub and pm_sub["status"])

        self.step("8. S11: changing a task's due date in a fixed-schedule project")
        await self.request("hub.project.associate", expect="accepted", record_type="account", record_id=acme["id"],
                           project_id=website["id"])
        await self.wait_projects("account", acme["id"], lambda ps: any(p["project_id"] == website["id"] for p in ps),
                                 "Website relaunch linked to Acme Corp")
        fixed = await ui.pm.upsert_task(project_id=website["id"], title="Go live", add_to_crm=True, due_date="2027-03-01")
        crm_fixed = await self.wait_record("crm", "task", lambda t: t.get("subject") == "Go live" and t.get("record_id") == acme["id"],
                                           "the fixed-schedule task in the CRM")
        await ui.crm.update_task(crm_fixed["id"], due_date="2027-04-01")
        self.say(f"Ada moves the due date of CRM task {crm_fixed['id']} to 2027-04-01 ...")
        _, msg = await self.wait_mail("the due date could not be changed (to Ada)", lambda m: self.admin_email in str(m["To"]))
        back = await self.wait_record("crm", "task", lambda t: t["id"] == crm_fixed["id"] and t.get("due_date") == "2027-03-01",
                                      "the CRM due date back to 2027-03-01")
        pm_fixed = await ui.pm.get("task", fixed["id"])
        self.say(f"PM task {fixed['id']} due date: {pm_fixed and pm_fixed['due_date']}")
        f.update(s11_mail=str(msg["Subject"]), s11_crm_due=back["due_date"], s11_pm_due=pm_fixed and pm_fixed["due_date"])

        self.step("9. Disabling (S7): links hidden, task sync stops; projects stay in the PM tool")
        changed_before = len([e for e in await self.events.poll() if e["event_type"] == "linking.integration.changed"])
        await self.request("hub.integration.disable", expect="accepted", portal_id="p-paid")
        await self.wait_no_projects("account", acme["id"], "Acme Corp shows no projects while disabled")
        self.say(f"PM still has {len(await self.pm('project'))} projects")
        await ui.crm.update_task(crm_task["id"], subject="Changed while disabled")
        await ui.pm.update_task(pm_task["id"], description="bump")  # something the enabled hub would mirror
        self.say("CRM task renamed while disabled; the PM task keeps its title (checked after re-enabling)")

        self.step("10. Enabling the same portal again: links come back, no resync, no new matching (S7)")
        reports_before = len([p for p, m in self.mails() if any((a.get_filename() or "").endswith(".xlsx") for a in m.iter_attachments())])
        await self.request("hub.integration.enable", expect="accepted", portal_id="p-paid", field_mapping=mapping,
                           permissions=PROFILE, deal_won_creates_project=True)
        await self.wait_projects("account", acme["id"], lambda ps: any(p["project_id"] == rollout["id"] for p in ps),
                                 "Acme Corp's projects shown again")
        pm_after = await ui.pm.get("task", pm_task["id"])
        self.say(f"PM task title after re-enabling: {pm_after and pm_after['title']!r} (not resynced)")
        f.update(reenabled_pm_title=pm_after and pm_after["title"], changed_before=changed_before)
        reports_after = len([p for p, m in self.mails() if any((a.get_filename() or "").endswith(".xlsx") for a in m.iter_attachments())])
        f["reports_before_after_reenable"] = (reports_before, reports_after)

        self.step("11. Switching portal (S20): old links removed, the new portal's projects linked")
        await ui.pm.upsert_portal(id="p-new", name="New paid portal", plan="paid")
        c_new = await ui.pm.upsert_client_company(portal_id="p-new", name="Acme Corp")
        new_project = await ui.pm.upsert_project(portal_id="p-new", name="Acme on the new portal", client_company_ids=[c_new["id"]])
        await self.request("hub.integration.switch_portal", expect="accepted", current_portal_id="p-paid", new_portal_id="p-new")
        projects = await self.wait_projects("account", acme["id"], lambda ps: bool(ps) and all(p["portal_id"] == "p-new" for p in ps)
                                            and any(p["project_id"] == new_project["id"] for p in ps),
                                            "Acme Corp linked to the new portal's project only")
        await self.wait_mail("the matching report of the new portal", lambda m: any(
            (p.get_filename() or "").endswith(".xlsx") for p in m.iter_attachments()))
        f["switched_projects"] = [p["project_id"] for p in projects]

        self.step("12. Rotating the service key (S24): the old key stops working at once")
        old = self.key
        self.key = await self.new_key()
        old_status = (await self.read_api(f"/api/v1/records/account/{acme['id']}/projects", key=old)).status_code
        new_status = (await self.read_api(f"/api/v1/records/account/{acme['id']}/projects")).status_code
        self.say(f"old key ...{old[-6:]} -> HTTP {old_status}; new key ...{self.key[-6:]} -> HTTP {new_status}")
        f.update(old_key_status=old_status, new_key_status=new_status)

        counters = await ui.counters()
        self.step("Done")
        self.say(f"sandbox counters for {self.org}: {counters['totals']}")
        self.say(f"message log: GET {self.t.sandbox_url}/sandbox/log?org_id={self.org}")
        self.say(f"e-mails of this run ({len(self.result.mails)}): " + ", ".join(p.name for p in self.result.mails))

    async def new_key(self) -> str:
        resp = await self.http.post(f"{self.t.linking_url}/api/v1/orgs/{self.org}/service-key",
                                    headers={"Authorization": f"Bearer {self.t.admin_token}"})
        if resp.status_code == 401:
            raise DemoFailed("the linking admin token was refused: set HUB_LINKING_ADMIN_TOKEN to the stack's token "
                             f"(`make up` keeps it in <state dir>/{ADMIN_TOKEN_FILE})")
        resp.raise_for_status()
        body = resp.json()
        key: str = body.get("service_key") or body["key"]
        # the key is minted over HTTP and only its hash travels: wait until the read API accepts it
        await wait_for("the new service key to be accepted", self._key_works(key), self.t.timeout)
        return key

    def _key_works(self, key: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return (await self.read_api("/api/v1/records/account/none/projects", key=key)).status_code == 200

        return probe


def _brief(rec: dict[str, Any]) -> str:
    keys = ("name", "title", "subject", "status", "priority", "due_date", "record_type", "record_id", "project_id", "body")
    return ", ".join(f"{k}={rec[k]!r}" for k in keys if rec.get(k) not in (None, "", []))


async def run_story(target: Target, org_id: str | None = None, out: Callable[[str], None] = print) -> Outcome:
    """The whole story against `target`; returns what it saw. Raises DemoFailed when the hub does not answer."""
    org_id = org_id or f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    return await Story(target, org_id, out).run()


def _ui_kafka_options(info: dict[str, Any]) -> dict[str, Any]:
    """The CRM UI principal's credentials on a secured `make up` broker (none on a PLAINTEXT one)."""
    creds_file = Path(info["kafka"].get("workdir", "")) / "credentials.json"
    if info["kafka"].get("security_protocol", "PLAINTEXT") == "PLAINTEXT" or not creds_file.is_file():
        return {}
    creds = json.loads(creds_file.read_text())
    return {"security_protocol": info["kafka"]["security_protocol"], "sasl_mechanism": creds["mechanism"],
            "sasl_plain_username": "ui", "sasl_plain_password": creds["users"]["ui"]}


def target_from_stack(state_dir: Path) -> Target:
    """Where `make up` runs, from <state_dir>/stack.json."""
    stack_file = state_dir / "stack.json"
    if not stack_file.exists():
        raise SystemExit(f"no {stack_file}: start the stack with `make up` (or pass --state-dir)")
    info = json.loads(stack_file.read_text())
    procs = info.get("processes", {})
    ports = {name: rec.get("port") for name, rec in procs.items()}
    missing = [n for n in ("linking", "sandbox", "identity", "tasks", "notifications") if n not in procs]
    if missing:
        raise SystemExit(f"{stack_file} records no {', '.join(missing)}: is `make up` running?")
    return Target(
        sandbox_url=f"http://127.0.0.1:{ports.get('sandbox') or 8090}",
        linking_url=f"http://127.0.0.1:{ports.get('linking') or 8082}",
        maildir=Path(info["smtp"]["maildir"]),
        kafka_bootstrap=info["kafka"]["bootstrap_servers"],
        topic_prefix=os.environ.get("HUB_KAFKA__TOPIC_PREFIX", ""),
        kafka_options=_ui_kafka_options(info),
        admin_token=os.environ.get("HUB_LINKING_ADMIN_TOKEN") or _stack_admin_token(state_dir),
    )


def _stack_admin_token(state_dir: Path) -> str:
    path = state_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        raise SystemExit(f"no {path}: set HUB_LINKING_ADMIN_TOKEN, or start the stack with `make up`")
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub_sandbox.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("HUB_STATE_DIR", "var/local")))
    parser.add_argument("--org-id", default=None, help="default: demo-<timestamp>")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each step")
    args = parser.parse_args(argv)
    target = target_from_stack(args.state_dir.resolve())
    target.timeout = args.timeout
    t0 = time.monotonic()
    try:
        asyncio.run(run_story(target, args.org_id, out=lambda s: print(s, flush=True)))
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
