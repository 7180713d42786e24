"""`make demo ZOHO=fake`: the FAQ story (S12, then S1) told against `make up ZOHO=fake`, where a person can
watch it: a CRM task saved in the fake Zoho CRM with "add to the PM tool" goes through the CRM connector,
the four services and the PM connector to a task in the fake Zoho Projects; closing it there closes the
CRM task. Every event on the way is printed as it passes (crm.ingest, pm.commands, pm.ingest, crm.commands).

It acts as people would: the records through the fake's UI endpoints (`/fake/...`, which also fire Zoho's
notifications), the integration's settings as the CRM UI's requests on `hub.requests` (principal `ui`),
the org's existing records through `hub-connector backfill --side both` with each connector's settings
file. It waits on what it can see, never blindly, and can run again on the same stack.

Run: `uv run python -m hub_devstack.zoho_demo [--state-dir var/local]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from hub_sandbox.demo import HubEvents

from . import stack, zoho
from .kafka import ADMIN_USER

T = TypeVar("T")
TRANSIENT = {"portal_unknown", "unknown_user", "not_found", "crm_user_not_in_portal"}
WATCHED = ("crm.ingest", "pm.commands", "pm.ingest", "crm.commands")
PROFILE = {"role": "manager", "permissions": ["add_task", "edit_project", "associate_project"]}


class DemoFailed(Exception):
    pass


async def wait_for(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float, tick: Callable[[], Awaitable[Any]]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        await tick()
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise DemoFailed(f"waited {timeout:.0f}s for {what}")
        await asyncio.sleep(0.3)


def describe(env: dict[str, Any]) -> str:
    """One line per event: what a person needs to follow the story."""
    p = env["payload"]
    bits = [f"{env['event_type']:<24}", f"by {env['producer']:<14}", env["entity_key"]]
    for key in ("subject", "title", "status", "priority", "version", "command_id", "reason_code"):
        if p.get(key) is not None:
            bits.append(f"{key}={p[key]}")
    if p.get("changes"):
        bits.append("changes=" + ",".join(f"{c['field']}={c['value']}" for c in p["changes"]))
    return "  ".join(bits)


class ZohoStory:
    def __init__(self, state_dir: Path, timeout: float, out: Callable[[str], None]) -> None:
        self.state_dir, self.timeout, self.out = state_dir, timeout, out
        info = json.loads((state_dir / "stack.json").read_text())
        if "crm-connector" not in info.get("services", {}):
            raise SystemExit(f"{state_dir}/stack.json has no connectors: start the stack with `make up ZOHO=fake`")
        self.info = info
        access = stack.kafka_access(info)
        self.bootstrap = info["kafka"]["bootstrap_servers"]
        self.ui_options = access.client_options("ui")
        self.admin_options = access.client_options(ADMIN_USER)
        self.client = zoho.oauth_client(state_dir)
        self.http = httpx.AsyncClient(timeout=15)
        self.fake = zoho.fake_url()
        self.answers = HubEvents(self.bootstrap, "linking.events", zoho.ORG, self.ui_options)
        self.tails = {t: HubEvents(self.bootstrap, t, zoho.ORG, self.admin_options) for t in WATCHED}
        self.shown: set[str] = set()

    def step(self, text: str) -> None:
        self.out(f"\n== {text}")

    def say(self, text: str) -> None:
        self.out(f"   {text}")

    async def show_events(self) -> None:
        """Print every event of the org that passed on the watched topics since the last call."""
        for topic, tail in self.tails.items():
            for env in await tail.poll():
                if env["event_id"] not in self.shown:
                    self.shown.add(env["event_id"])
                    self.out(f"     [{topic:<12}] {describe(env)}")

    async def wait(self, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
        return await wait_for(what, probe, self.timeout, self.show_events)

    # -- the fake Zoho, as its users see it ---------------------------------------------------------

    async def fake_get(self, path: str, key: str) -> list[dict[str, Any]]:
        resp = await self.http.get(f"{self.fake}/fake/{path}")
        resp.raise_for_status()
        return list(resp.json()[key])

    async def fake_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self.http.post(f"{self.fake}/fake/{path}", json=body)
        resp.raise_for_status()
        return dict(resp.json())

    # -- the CRM UI's requests ----------------------------------------------------------------------

    async def request(self, request_type: str, **fields: Any) -> dict[str, Any]:
        """Send a UI request on hub.requests; resend while the hub has not yet seen what it names."""
        from aiokafka import AIOKafkaProducer

        from hub_schema import encode, make_event
        from hub_schema.registry import lookup

        model = lookup(request_type, None)
        ok_type = "linking.integration.changed" if request_type.startswith("hub.integration.") else None
        producer = AIOKafkaProducer(**self.ui_options)
        await producer.start()
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                since = len(await self.answers.poll())
                payload = model.model_validate_json(json.dumps({"request_id": str(uuid.uuid4()), **fields}))  # type: ignore[union-attr]
                env = make_event(payload, org_id=zoho.ORG, entity_key=f"org:{zoho.ORG}", producer="crm-ui", origin="crm")
                await producer.send_and_wait("hub.requests", encode(env), key=env.entity_key.encode())
                answer = await self.wait(f"the hub's answer to {request_type}",
                                         lambda: self.answers.answer(str(payload.request_id), since, ok_type))  # type: ignore[attr-defined]
                code = answer["payload"].get("reason_code")
                if answer["event_type"] == "linking.request.refused" and code in TRANSIENT and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    continue
                return answer
        finally:
            await producer.stop()

    # -- the story ----------------------------------------------------------------------------------

    async def backfill(self) -> None:
        secrets = self.state_dir / "secrets"
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "hub-connector"), "backfill", "--org", zoho.ORG, "--side", "both",
            "--crm-env", str(secrets / "crm-connector.env"), "--pm-env", str(secrets / "pm-connector.env"),
            env={k: v for k, v in os.environ.items() if not k.startswith("HUB_")}, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        for line in err.decode().replace("\r", "\n").splitlines():
            if line.strip() and not line.startswith("{"):
                self.say(line.strip())
        if proc.returncode:
            raise DemoFailed(f"hub-connector backfill exited with {proc.returncode}")

    async def run(self) -> None:
        await self.answers.start()
        for tail in self.tails.values():
            await tail.start()
        try:
            await self._story()
        finally:
            await self.answers.stop()
            for tail in self.tails.values():
                await tail.stop()
            await self.http.aclose()

    async def _story(self) -> None:
        self.step(f"0. make up ZOHO=fake: fake Zoho at {self.fake}, CRM connector :8091 (notified by the fake), PM connector :8092")
        admin = (await self.fake_get("crm/users", "data"))[0]
        acme = next(a for a in await self.fake_get("crm/Accounts", "data") if a["Account_Name"] == "Acme")
        project = next(p for p in await self.fake_get("pm/projects", "projects") if p["name"] == "Acme rollout")
        self.say(f"Zoho CRM: admin {admin['email']} ({admin['id']}), account Acme ({acme['id']})")
        self.say(f"Zoho Projects: portal {zoho.PORTAL}, project 'Acme rollout' ({project['id']})")

        self.step("1. The org's existing records into the hub: hub-connector backfill --side both (each connector's own settings)")
        await self.backfill()

        self.step("2. The CRM admin enables the integration and associates 'Acme rollout' with Acme (CRM UI -> hub.requests)")
        answer = await self.request("hub.integration.enable", acting_user_id=admin["id"], portal_id=zoho.PORTAL, field_mapping=[],
                                    permissions=PROFILE, deal_won_creates_project=False)
        self.say(f"hub: {answer['event_type']} {answer['payload'].get('state') or answer['payload'].get('reason_code') or ''}")
        answer = await self.request("hub.project.associate", acting_user_id=admin["id"], record_type="account", record_id=acme["id"],
                                    project_id=project["id"])
        self.say(f"hub: {answer['event_type']} {answer['payload'].get('reason_code') or ''}")

        subject = f"Site survey {time.strftime('%H:%M:%S')}"
        self.step(f"3. S12: Ada saves a task '{subject}' on Acme in Zoho CRM with 'add to the PM tool'")
        crm_task = await self.fake_post("crm/Tasks", {"Subject": subject, "What_Id": {"id": acme["id"]}, "$se_module": "Accounts",
                                                      "Priority": "High", "Due_Date": "2026-12-05", "Owner": {"id": admin["id"]},
                                                      "Created_By": {"id": admin["id"]}, "Modified_By": {"id": admin["id"]},
                                                      "Hub_Add_To_PM": True})
        self.say(f"Zoho CRM task {crm_task['id']} saved; Zoho notifies the CRM connector")

        async def pm_task() -> dict[str, Any] | None:
            return next((t for t in await self.fake_get("pm/tasks", "tasks") if t["name"] == subject), None)

        task = await self.wait("the task in Zoho Projects", pm_task)
        await self.show_events()
        self.say(f"-> Zoho Projects task {task['id']} in project {task['project_id']}: priority {task['priority']}, due {task['end_date']}")

        self.step("4. S1: someone closes it in Zoho Projects; its workflow webhook makes the PM connector poll now")
        await self.fake_post("pm/tasks", {**task, "status": {"name": "Closed", "is_closed_type": True}})
        hook = await self.http.post(f"http://127.0.0.1:{zoho.CONNECTOR_PORTS['pm-connector']}/zoho/projects/webhook/{zoho.ORG}",
                                    headers={"X-Hub-Webhook-Secret": self.client["webhook_secret"]})
        self.say(f"webhook -> HTTP {hook.status_code}")

        async def crm_closed() -> dict[str, Any] | None:
            return next((t for t in await self.fake_get("crm/Tasks", "data") if t["id"] == crm_task["id"] and t.get("Status") == "Completed"), None)

        await self.wait("the CRM task closed", crm_closed)
        await self.show_events()
        self.say(f"-> Zoho CRM task {crm_task['id']} status Completed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub_devstack.zoho_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("HUB_STATE_DIR", "var/local")))
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each step")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if not (state_dir / "stack.json").exists():
        raise SystemExit(f"no {state_dir}/stack.json: start the stack with `make up ZOHO=fake`")
    t0 = time.monotonic()
    try:
        asyncio.run(ZohoStory(state_dir, args.timeout, lambda s: print(s, flush=True)).run())
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
